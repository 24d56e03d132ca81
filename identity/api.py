"""REST endpoints of identity resolution: the review queue and explanations."""
from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

from cdp.api import CdpBlueprint as Blueprint, require_scope
from cdp.models import Profile

blp = Blueprint("identity", __name__, url_prefix="/api/v1", description="Identity resolution: review queue, explanations")


class ReviewListArgs(Schema):
    status = fields.String(load_default="pending", validate=validate.OneOf(["pending", "match", "non_match"]))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10_000_000))


class DecisionIn(Schema):
    class Meta:
        unknown = "raise"

    decision = fields.String(required=True, validate=validate.OneOf(["match", "non_match"]))


class ExplainArgs(Schema):
    language = fields.String(load_default="pt-BR", validate=validate.OneOf(["pt-BR", "en"]))


def _runtime():
    return current_app.extensions["cdp"]


@blp.route("/identity/reviews")
class Reviews(MethodView):
    @require_scope("identity:review")
    @blp.arguments(ReviewListArgs, location="query")
    def get(self, args):
        """Pairs waiting for a person (evidence: field levels and weights, no values)."""
        from identity.review import list_items

        with _runtime().session() as session:
            total, items = list_items(session, args["status"], args["limit"], args["offset"])
        return {"total": total, "items": items}


@blp.route("/identity/reviews/<int:item_id>")
class ReviewItemView(MethodView):
    @require_scope("identity:review")
    def get(self, item_id):
        """One pair with both records' values side by side (decrypted for the reviewer)."""
        from identity.models import ReviewItem
        from identity.review import evidence_values, summary

        runtime = _runtime()
        with runtime.session() as session:
            item = session.get(ReviewItem, item_id) if item_id < 2**31 else None
            if item is None:
                abort(404, message="item_id: no such review item")
            out = summary(session, item)
            out["values"] = evidence_values(session, runtime.keys(session), item)
            return out

    @require_scope("identity:review")
    @blp.arguments(DecisionIn)
    def post(self, body, item_id):
        """Decide: `match` merges the two profiles, `non_match` keeps them apart for good."""
        from identity.review import decide

        runtime = _runtime()
        with runtime.session() as session:
            try:
                return decide(session, runtime.keys(session), runtime.settings, item_id, body["decision"],
                              actor=f"api:{g.api_key_name}")
            except LookupError:
                abort(404, message="item_id: no such review item")
            except ValueError as exc:
                abort(409, message=str(exc))


@blp.route("/profiles/<profile_id>/explain")
class ProfileExplain(MethodView):
    @require_scope("profiles:read")
    @blp.arguments(ExplainArgs, location="query")
    def get(self, args, profile_id):
        """Why each record belongs to this profile: rule or per-field weights (LGPD Art. 20)."""
        from identity.explain import explain_profile

        with _runtime().session() as session:
            if len(profile_id) > 36 or session.get(Profile, profile_id) is None:
                abort(404, message="profile_id: no such profile")
            return explain_profile(session, profile_id, args["language"])
