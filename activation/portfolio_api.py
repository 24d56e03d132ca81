"""REST endpoints of portfolios (docs/segments.md, "Portfolios"): create,
list, show, update, assign a manager, members by hand, member pages (ids and
metrics only), snapshot history and snapshots on demand."""
from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate, validates_schema, ValidationError

from activation.errors import abort_problem
from cdp.api import CdpBlueprint as Blueprint, require_scope

blp = Blueprint("portfolios", __name__, url_prefix="/api/v1", description="Customer portfolios and their managers")

NAME = [validate.Length(1, 100), validate.Regexp(r"^[A-Za-z0-9_.\- ]+$", error="letters, digits, space, _ . - only")]


class PortfolioIn(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(required=True, validate=NAME)
    description = fields.String(validate=validate.Length(max=500), allow_none=True)
    manager_id = fields.String(required=True, validate=validate.Length(1, 36))
    segment_id = fields.Integer(allow_none=True, validate=validate.Range(1, 2**31 - 1),
                                metadata={"description": "Rule-based: members follow this segment. Omit for hand-kept."})


class PortfolioUpdate(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(validate=NAME)
    description = fields.String(validate=validate.Length(max=500))


class ManagerIn(Schema):
    class Meta:
        unknown = "raise"

    manager_id = fields.String(required=True, validate=validate.Length(1, 36))


class MembersIn(Schema):
    class Meta:
        unknown = "raise"

    profile_ids = fields.List(fields.String(validate=validate.Length(1, 36)), required=True,
                              validate=validate.Length(1, 1000))


class PageArgs(Schema):
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class HistoryArgs(Schema):
    start = fields.Date(data_key="from", load_default=None)
    end = fields.Date(data_key="to", load_default=None)

    @validates_schema
    def _order(self, data, **kwargs):
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError("must not be before from", "to")


def _runtime():
    return current_app.extensions["cdp"]


def _actor() -> str:
    return f"api_key:{g.api_key_name}"


def _portfolio(session, portfolio_id: int):
    from activation.portfolios import PortfolioError, get_portfolio

    try:
        return get_portfolio(session, portfolio_id)
    except PortfolioError as exc:
        abort(404, message="No such portfolio", field=exc.field)


@blp.route("/portfolios")
class Portfolios(MethodView):
    @require_scope("portfolios:read")
    def get(self):
        """Every portfolio with its manager, member count and latest snapshot."""
        from activation.portfolios import overview

        with _runtime().session() as session:
            return {"portfolios": overview(session)}

    @require_scope("portfolios:write")
    @blp.arguments(PortfolioIn)
    def post(self, data):
        """Create a portfolio: hand-kept, or rule-based with `segment_id`."""
        from activation.portfolios import PortfolioError, create_portfolio, portfolio_dict

        with _runtime().session() as session:
            try:
                portfolio = create_portfolio(session, data["name"], data["manager_id"], data.get("description"),
                                             data.get("segment_id"), actor=_actor())
            except PortfolioError as exc:
                abort_problem(exc)
            return portfolio_dict(session, portfolio, with_history=True), 201


@blp.route("/portfolios/<int:portfolio_id>")
class PortfolioView(MethodView):
    @require_scope("portfolios:read")
    def get(self, portfolio_id):
        """One portfolio with its manager history and latest snapshot."""
        from activation.portfolios import portfolio_dict

        with _runtime().session() as session:
            return portfolio_dict(session, _portfolio(session, portfolio_id), with_history=True)

    @require_scope("portfolios:write")
    @blp.arguments(PortfolioUpdate)
    def patch(self, data, portfolio_id):
        """Rename or describe."""
        from activation.portfolios import PortfolioError, portfolio_dict, update_portfolio

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            try:
                update_portfolio(session, portfolio, data.get("name"), data.get("description"))
            except PortfolioError as exc:
                abort_problem(exc)
            return portfolio_dict(session, portfolio, with_history=True)


@blp.route("/portfolios/<int:portfolio_id>/manager")
class PortfolioManagerView(MethodView):
    @require_scope("portfolios:write")
    @blp.arguments(ManagerIn)
    def put(self, data, portfolio_id):
        """Hand the portfolio to another manager (an active staff user); the history keeps the previous ones."""
        from activation.portfolios import PortfolioError, assign_manager, portfolio_dict

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            try:
                assign_manager(session, portfolio, data["manager_id"], actor=_actor())
            except PortfolioError as exc:
                abort_problem(exc)
            return portfolio_dict(session, portfolio, with_history=True)


@blp.route("/portfolios/<int:portfolio_id>/members")
class PortfolioMembers(MethodView):
    @require_scope("portfolios:read")
    @blp.arguments(PageArgs, location="query")
    def get(self, args, portfolio_id):
        """Keyset pages of members in profile-id order: profile ids and metrics only (no personal data)."""
        from activation.portfolios import PortfolioError, decode_cursor, members_page

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            try:
                after = decode_cursor(portfolio.id, args["cursor"])
            except PortfolioError as exc:
                abort_problem(exc)
            items, cursor = members_page(session, portfolio, after, args["limit"])
            return {"portfolio_id": portfolio.id, "items": items, "next_cursor": cursor}

    @require_scope("portfolios:write")
    @blp.arguments(MembersIn)
    def post(self, data, portfolio_id):
        """Add customers by hand (manual portfolios). 409 names those already in another portfolio."""
        from activation.portfolios import PortfolioError, add_members

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            try:
                return add_members(session, portfolio, data["profile_ids"], actor=_actor())
            except PortfolioError as exc:
                abort_problem(exc)


@blp.route("/portfolios/<int:portfolio_id>/members/remove")
class PortfolioMembersRemove(MethodView):
    @require_scope("portfolios:write")
    @blp.arguments(MembersIn)
    def post(self, data, portfolio_id):
        """Remove customers (manual portfolios); their stay stays in the history."""
        from activation.portfolios import PortfolioError, remove_members

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            try:
                return remove_members(session, portfolio, data["profile_ids"], actor=_actor())
            except PortfolioError as exc:
                abort_problem(exc)


@blp.route("/portfolios/<int:portfolio_id>/snapshots")
class PortfolioSnapshots(MethodView):
    @require_scope("portfolios:read")
    @blp.arguments(HistoryArgs, location="query")
    def get(self, args, portfolio_id):
        """The portfolio's daily snapshots (time series), oldest first; `from`/`to` are ISO dates."""
        from activation.portfolios import history

        with _runtime().session() as session:
            portfolio = _portfolio(session, portfolio_id)
            return {"portfolio_id": portfolio.id, "snapshots": history(session, portfolio.id, args["start"],
                                                                       args["end"])}


@blp.route("/portfolios/snapshots")
class SnapshotAll(MethodView):
    @require_scope("portfolios:write")
    def post(self):
        """Snapshot every portfolio for today (replacing today's); 202 with a job id when REDIS_URL is set."""
        from activation.portfolios import submit_snapshot

        runtime = _runtime()
        return submit_snapshot(runtime), 202 if runtime.settings.redis_url else 200
