"""REST endpoints of destinations and activations (docs/activation.md):
scopes activations:read / activations:write. Secrets are never returned;
runs and deliveries show counts and ids only."""
from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate

from activation.errors import abort_problem
from cdp.api import CdpBlueprint as Blueprint, require_scope

blp = Blueprint("activations", __name__, url_prefix="/api/v1",
                description="Destinations, activations of segments, runs and the failure registry")


class DestinationIn(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$",
                                                                 error="snake_case, up to 64 characters"))
    type = fields.String(required=True, validate=validate.Length(1, 64))
    config = fields.Dict(keys=fields.String(), required=True)


class ScheduleIn(Schema):
    class Meta:
        unknown = "raise"

    every_minutes = fields.Integer(validate=validate.Range(1, 525_600))
    cron = fields.String(validate=validate.Length(1, 100))


def _id_or_name(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not 0 < len(str(value)) <= 100:
        raise ValidationError("an id or a name")


class ActivationIn(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(required=True, validate=validate.Length(1, 100))
    segment = fields.Raw(required=True, validate=_id_or_name, metadata={"description": "segment id or name"})
    destination = fields.Raw(required=True, validate=_id_or_name,
                             metadata={"description": "destination id or name"})
    purpose = fields.String(required=True, validate=validate.Length(1, 64))
    holdout_pct = fields.Integer(load_default=0, validate=validate.Range(0, 50))
    batch_size = fields.Integer(load_default=500, validate=validate.Range(1, 10_000))
    schedule = fields.Nested(ScheduleIn, load_default=None, allow_none=True)
    # Last: the attribute named "fields" hides the marshmallow module inside this class body.
    fields = fields.List(fields.String(validate=validate.Length(1, 64)), required=True,
                         validate=validate.Length(1, 50))


class RetryIn(Schema):
    class Meta:
        unknown = "raise"

    deliveries = fields.List(fields.Integer(validate=validate.Range(1, 2**31 - 1)), validate=validate.Length(1, 1000))
    activation_id = fields.Integer(validate=validate.Range(1, 2**31 - 1))
    due = fields.Boolean(load_default=False)


class DiscardIn(Schema):
    class Meta:
        unknown = "raise"

    deliveries = fields.List(fields.Integer(validate=validate.Range(1, 2**31 - 1)), required=True,
                             validate=validate.Length(1, 1000))


def _runtime():
    return current_app.extensions["cdp"]


@blp.route("/destinations")
class Destinations(MethodView):
    @require_scope("activations:read")
    def get(self):
        """Configured destinations (plain configuration and the names of the secrets set)."""
        from activation.destinations import destination_dict, list_destinations

        runtime = _runtime()
        with runtime.session() as session:
            keys = runtime.keys(session)
            return {"destinations": [destination_dict(session, keys, d) for d in list_destinations(session)]}

    @require_scope("activations:write")
    @blp.arguments(DestinationIn)
    def post(self, data):
        """Configure a destination; the connector type's schema checks `config` (secrets stored encrypted)."""
        from activation.destinations import ActivationError, add_destination, destination_dict

        runtime = _runtime()
        with runtime.session() as session:
            keys = runtime.keys(session)
            try:
                dest = add_destination(session, keys, data["name"], data["type"], data["config"])
            except ActivationError as exc:
                abort_problem(exc)
            return destination_dict(session, keys, dest), 201


@blp.route("/activations")
class Activations(MethodView):
    @require_scope("activations:read")
    def get(self):
        """Every activation with what its destination currently has."""
        from sqlalchemy import select

        from activation.run_models import Activation
        from activation.runs import activation_dict

        with _runtime().session() as session:
            return {"activations": [activation_dict(session, a)
                                    for a in session.scalars(select(Activation).order_by(Activation.id))]}

    @require_scope("activations:write")
    @blp.arguments(ActivationIn)
    def post(self, data):
        """Activate a segment to a destination for one consent purpose, with the fields allowed."""
        from activation.destinations import ActivationError
        from activation.runs import activation_dict, create_activation

        with _runtime().session() as session:
            try:
                act = create_activation(session, data["name"], data["segment"], data["destination"], data["purpose"],
                                        data["fields"], data["holdout_pct"], data["batch_size"],
                                        data["schedule"] or None, actor=f"api_key:{g.api_key_name}")
            except ActivationError as exc:
                abort_problem(exc)
            act_id = act.id
        runtime = _runtime()
        if runtime.settings.redis_url and data["schedule"]:
            from activation.runs import arm

            arm(runtime, act_id)  # rq's scheduler runs it (`cdp worker`)
        with runtime.session() as session:
            from activation.run_models import Activation

            return activation_dict(session, session.get(Activation, act_id)), 201


def _activation_id(session, activation_id: int) -> int:
    from activation.destinations import ActivationError
    from activation.runs import find_activation

    try:
        return find_activation(session, activation_id).id
    except ActivationError as exc:
        abort_problem(exc)


@blp.route("/activations/<int:activation_id>/run")
class ActivationRunNow(MethodView):
    @require_scope("activations:write")
    def post(self, activation_id):
        """Start a run: queued as an rq job with REDIS_URL (202), otherwise run now (200)."""
        from activation.destinations import ActivationError
        from activation.runs import submit_run

        runtime = _runtime()
        with runtime.session() as session:
            _activation_id(session, activation_id)
        try:
            out = submit_run(runtime, activation_id, trigger="api")
        except ActivationError as exc:
            abort_problem(exc)
        return out, 202 if runtime.settings.redis_url else 200


@blp.route("/activations/<int:activation_id>/pause")
class ActivationPause(MethodView):
    @require_scope("activations:write")
    def post(self, activation_id):
        """Pause: runs add no one until resumed, but still send removals (revocations, segment exits)."""
        return _set_active(activation_id, False)


@blp.route("/activations/<int:activation_id>/resume")
class ActivationResume(MethodView):
    @require_scope("activations:write")
    def post(self, activation_id):
        """Resume: the next run adds who is missing."""
        return _set_active(activation_id, True)


def _set_active(activation_id: int, active: bool):
    from activation.runs import set_active

    runtime = _runtime()
    with runtime.session() as session:
        _activation_id(session, activation_id)  # 404 as problem+json
    return set_active(runtime, activation_id, active, actor=f"api_key:{g.api_key_name}")


class RunsArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


@blp.route("/activations/<int:activation_id>/runs")
class ActivationRuns(MethodView):
    @require_scope("activations:read")
    @blp.arguments(RunsArgs, location="query")
    def get(self, args, activation_id):
        """Runs, newest first: status and counts (sent, added, removed, skipped by consent, held out, failed)."""
        from activation.runs import list_runs

        with _runtime().session() as session:
            return {"runs": list_runs(session, _activation_id(session, activation_id), args["limit"])}


class FailuresArgs(Schema):
    activation_id = fields.Integer(load_default=None, validate=validate.Range(1, 2**31 - 1))


@blp.route("/activations/failures")
class Failures(MethodView):
    @require_scope("activations:read")
    @blp.arguments(FailuresArgs, location="query")
    def get(self, args):
        """The failure registry: deliveries that failed after retries, with the reason."""
        from activation.runs import failures

        with _runtime().session() as session:
            return {"failures": failures(session, args["activation_id"])}


@blp.route("/activations/failures/retry")
class FailuresRetry(MethodView):
    @require_scope("activations:write")
    @blp.arguments(RetryIn)
    def post(self, data):
        """Re-drive failed deliveries (given ids, an activation's, or all; `due`: those whose time has come),
        with their original idempotency keys."""
        from activation.destinations import ActivationError
        from activation.runs import retry

        runtime = _runtime()
        try:
            out = retry(runtime, data.get("deliveries"), data.get("activation_id"), data["due"])
        except ActivationError as exc:
            abort_problem(exc)
        return out, 202 if runtime.settings.redis_url and out["retried"] else 200


@blp.route("/activations/failures/discard")
class FailuresDiscard(MethodView):
    @require_scope("activations:write")
    @blp.arguments(DiscardIn)
    def post(self, data):
        """Take deliveries out of the failure registry without sending them; the next run plans their
        subjects again from the current segment and consent (their runs show status "partial")."""
        from activation.destinations import ActivationError
        from activation.runs import discard

        try:
            return discard(_runtime(), data["deliveries"], actor=f"api_key:{g.api_key_name}")
        except ActivationError as exc:
            abort_problem(exc)
