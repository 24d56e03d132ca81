"""REST endpoints of segments (docs/segments.md): create, list, version,
preview, refresh, and members through the consent gate."""
from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

from activation.errors import abort_problem
from activation.rules import RulesField
from cdp.api import CdpBlueprint as Blueprint, require_scope

blp = Blueprint("segments", __name__, url_prefix="/api/v1", description="Segments and their members")


class SegmentIn(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(required=True, validate=[validate.Length(1, 100),
                                                  validate.Regexp(r"^[A-Za-z0-9_.\- ]+$",
                                                                  error="letters, digits, space, _ . - only")])
    description = fields.String(validate=validate.Length(max=500), allow_none=True)
    rules = RulesField(required=True)
    holdout_pct = fields.Integer(load_default=0, validate=validate.Range(0, 50))


class SegmentUpdate(Schema):
    class Meta:
        unknown = "raise"

    description = fields.String(validate=validate.Length(max=500))
    rules = RulesField()
    holdout_pct = fields.Integer(validate=validate.Range(0, 50))


class PreviewIn(Schema):
    class Meta:
        unknown = "raise"

    rules = RulesField(required=True)


def _runtime():
    return current_app.extensions["cdp"]


def _segment(session, segment_id: int):
    from activation.models import Segment

    segment = session.get(Segment, segment_id) if 0 < segment_id < 2**31 else None
    if segment is None:
        abort(404, message="No such segment")
    return segment


@blp.route("/segments")
class Segments(MethodView):
    @require_scope("segments:read")
    def get(self):
        """Every segment with its current rules and member count."""
        from activation.models import Segment
        from activation.segments import segment_dict
        from sqlalchemy import select

        with _runtime().session() as session:
            return {"segments": [segment_dict(session, s) for s in session.scalars(select(Segment).order_by(Segment.id))]}

    @require_scope("segments:write")
    @blp.arguments(SegmentIn)
    def post(self, data):
        """Create a segment (version 1)."""
        from activation.segments import SegmentError, create_segment, segment_dict

        with _runtime().session() as session:
            try:
                segment = create_segment(session, data["name"], data["rules"], data.get("description"),
                                         data["holdout_pct"], actor=f"api_key:{g.api_key_name}")
            except SegmentError as exc:
                abort_problem(exc)
            return segment_dict(session, segment), 201


@blp.route("/segments/preview")
class Preview(MethodView):
    @require_scope("segments:read")
    @blp.arguments(PreviewIn)
    def post(self, data):
        """Count and sample profile ids of rules not saved yet."""
        from activation.segments import preview

        with _runtime().session() as session:
            return preview(session, data["rules"])


@blp.route("/segments/<int:segment_id>")
class SegmentView(MethodView):
    @require_scope("segments:read")
    def get(self, segment_id):
        """One segment with its version history."""
        from activation.segments import segment_dict

        with _runtime().session() as session:
            return segment_dict(session, _segment(session, segment_id), with_history=True)

    @require_scope("segments:write")
    @blp.arguments(SegmentUpdate)
    def patch(self, data, segment_id):
        """Change rules (a new version), description or holdout."""
        from activation.segments import SegmentError, segment_dict, update_segment

        with _runtime().session() as session:
            segment = _segment(session, segment_id)
            try:
                update_segment(session, segment, data.get("rules"), data.get("description"), data.get("holdout_pct"),
                               actor=f"api_key:{g.api_key_name}")
            except SegmentError as exc:
                abort_problem(exc)
            return segment_dict(session, segment, with_history=True)


@blp.route("/segments/<int:segment_id>/preview")
class SegmentPreview(MethodView):
    @require_scope("segments:read")
    def get(self, segment_id):
        """Count and sample profile ids of the segment's current rules (live, not materialized)."""
        from activation.segments import _rules_of, preview

        with _runtime().session() as session:
            return preview(session, _rules_of(session, _segment(session, segment_id)))


@blp.route("/segments/<int:segment_id>/refresh")
class SegmentRefresh(MethodView):
    @require_scope("segments:write")
    def post(self, segment_id):
        """Materialize membership now (or queue it with REDIS_URL): entered and exited counts."""
        from activation.segments import submit_refresh

        with _runtime().session() as session:
            _segment(session, segment_id)
        return submit_refresh(_runtime(), segment_id), 202 if _runtime().settings.redis_url else 200


class MembersArgs(Schema):
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    fields = fields.String(load_default=None, validate=validate.Length(max=1000))


@blp.route("/segments/<int:segment_id>/members")
class SegmentMembers(MethodView):
    @require_scope("segments:read")
    @blp.arguments(MembersArgs, location="query")
    def get(self, args, segment_id):
        """Members the consent ledger allows for this key's declared purpose, with the
        fields this key may receive; keyset pages (`next_cursor`). Each delivery is logged."""
        from activation.access import AccessError, access_for, choose_fields, decode_cursor, deliver_page
        from cdp.disclosures import Recipient

        runtime = _runtime()
        with runtime.session() as session:
            segment = _segment(session, segment_id)
            try:
                access = access_for(session, g.api_key_id)
                requested = [f.strip() for f in args["fields"].split(",") if f.strip()] if args["fields"] else None
                chosen = choose_fields(access.fields, requested)
                after = decode_cursor(segment.id, args["cursor"])
            except AccessError as exc:
                abort_problem(exc)
            items, cursor = deliver_page(session, runtime.keys(session), segment,
                                         Recipient("api_key", str(g.api_key_id), g.api_key_name), access.purpose,
                                         chosen, after, args["limit"])
            return {"segment_id": segment.id, "purpose": access.purpose, "fields": ["profile_id", *chosen],
                    "items": items, "next_cursor": cursor}
