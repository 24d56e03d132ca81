from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort

from cdp.api import CdpBlueprint as Blueprint, require_scope
from cdp.models import Profile
from cdp.profiles import LookupError_, lookup, merge_history, profile_view
from identity.resolve import Resolver
from schemas.api import MergeEventOut, MergeListOut, ProfileListOut, ProfileLookupArgs, ProfileOut, SplitIn

blp = Blueprint("profiles", __name__, url_prefix="/api/v1", description="Unified profiles")


def _runtime():
    return current_app.extensions["cdp"]


def _valid_uuid(value: str, field: str) -> None:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        abort(404, message=f"{field}: no such profile")


@blp.route("/profiles")
class Profiles(MethodView):
    @require_scope("profiles:read")
    @blp.arguments(ProfileLookupArgs, location="query")
    @blp.response(200, ProfileListOut)
    def get(self, args):
        """Find profiles by identifier (all given identifiers must match)."""
        if not args:
            abort(422, message="Give at least one of email, phone, cpf, cnpj", field="email")
        runtime = _runtime()
        with runtime.session() as session:
            try:
                ids = lookup(session, runtime.keyring, args)
            except LookupError_ as exc:
                abort(422, message=f"{exc.field}: {exc}", field=exc.field)
            keys = runtime.keys(session)
            return {"profiles": [profile_view(session, keys, session.get(Profile, pid), include_records=False) for pid in ids]}


@blp.route("/profiles/<profile_id>")
class ProfileItem(MethodView):
    @require_scope("profiles:read")
    @blp.response(200, ProfileOut)
    def get(self, profile_id):
        """The golden record, with the source of each value and the source records behind it."""
        _valid_uuid(profile_id, "profile_id")
        runtime = _runtime()
        with runtime.session() as session:
            profile = session.get(Profile, profile_id)
            if profile is None or profile.status == "deleted":
                abort(404, message="profile_id: no such profile")
            return profile_view(session, runtime.keys(session), profile)


@blp.route("/profiles/<profile_id>/merges")
class ProfileMerges(MethodView):
    @require_scope("profiles:read")
    @blp.response(200, MergeListOut)
    def get(self, profile_id):
        """Every merge and split this profile took part in, with its rule."""
        _valid_uuid(profile_id, "profile_id")
        runtime = _runtime()
        with runtime.session() as session:
            if session.get(Profile, profile_id) is None:
                abort(404, message="profile_id: no such profile")
            return {"merges": merge_history(session, profile_id)}


@blp.route("/profiles/<profile_id>/split")
class ProfileSplit(MethodView):
    @require_scope("profiles:write")
    @blp.arguments(SplitIn)
    @blp.response(201, ProfileOut)
    def post(self, body, profile_id):
        """Move source records out into a new profile; the two are never merged again automatically."""
        _valid_uuid(profile_id, "profile_id")
        runtime = _runtime()
        with runtime.session() as session:
            resolver = Resolver(session, runtime.keys(session), runtime.settings)
            try:
                new = resolver.split(profile_id, body["record_ids"], actor=f"api:{g.api_key_name}")
            except LookupError:
                abort(404, message="profile_id: no such active profile")
            except ValueError as exc:
                abort(422, message=f"record_ids: {exc}", field="record_ids")
            session.flush()
            return profile_view(session, resolver.keys, new)


@blp.route("/merges/<int:merge_id>/undo")
class MergeUndo(MethodView):
    @require_scope("profiles:write")
    @blp.response(200, MergeEventOut)
    def post(self, merge_id):
        """Undo a merge: the absorbed profile comes back with its records."""
        if merge_id > 2**31 - 1:  # past any id; SQLite cannot even bind it (OverflowError)
            abort(404, message="merge_id: no such merge")
        runtime = _runtime()
        with runtime.session() as session:
            resolver = Resolver(session, runtime.keys(session), runtime.settings)
            try:
                profile = resolver.undo_merge(merge_id, actor=f"api:{g.api_key_name}")
            except LookupError:
                abort(404, message="merge_id: no such merge")
            except ValueError as exc:
                abort(409, message=str(exc))
            session.flush()
            history = merge_history(session, profile.id)
            return history[-1]
