"""REST API of consents, purposes and the ledger."""
from __future__ import annotations

import uuid

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError, OperationalError

from cdp.api import CdpBlueprint as Blueprint, require_scope
from cdp.models import ApiKey
from consent import ledger, receipts
from consent.purposes import PurposeError, create_purpose, get_purpose, list_purposes, purpose_dict, update_purpose
from consent.schemas import (
    CheckpointIn,
    CheckpointOut,
    ConsentIn,
    ConsentQuery,
    ConsentRecordedOut,
    PurposeIn,
    PurposeListOut,
    PurposeOut,
    PurposeUpdate,
    ReceiptOut,
    ReceiptQuery,
    SubjectConsentsOut,
    VerifyOut,
)
from consent.signing import SignatureError

blp = Blueprint("consent", __name__, url_prefix="/api/v1", description="Consent ledger, purposes and receipts (LGPD)")


def _runtime():
    return current_app.extensions["cdp"]


def _profile_id(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        abort(404, message="profile_id: no such profile")
    return value


def _has_scope(session, scope: str) -> bool:
    key = session.get(ApiKey, g.api_key_id)
    return key is not None and (scope in key.scopes or "admin" in key.scopes)


@blp.route("/consents")
class Consents(MethodView):
    @require_scope("consents:write")
    @blp.arguments(ConsentIn)
    @blp.response(201, ConsentRecordedOut)
    @blp.alt_response(200, schema=ConsentRecordedOut, description="Already recorded (same idempotency_key)")
    def post(self, body):
        """Record a grant, revocation or opt-out, with its evidence.

        IP, user agent and free text are stored encrypted with the subject's
        key; a grant of a consent-based purpose must name the notice version
        shown, and binds to the purpose version that notice describes."""
        runtime = _runtime()
        collector = f"api:{g.api_key_name}"
        for attempt in range(3):
            try:
                with runtime.session() as session:
                    keys = runtime.keys(session)
                    origin = (ledger.api_origin_key(runtime.keyring, collector, body["idempotency_key"])
                              if body.get("idempotency_key") else None)
                    entry, created = ledger.record(
                        session, keys, body["profile_id"], body["purpose"], body["action"], method="api",
                        collector=collector, occurred_at=body.get("occurred_at"), evidence=dict(body["evidence"]),
                        origin_key=origin, strict=True)
                    state = next(s for s in ledger.states(session, entry.subject_id) if s["purpose"] == entry.purpose)
                    out = {"entry": {**ledger.entry_dict(entry), "evidence_status": "withheld" if entry.evidence_ct
                                     else "none"}, "state": state, "duplicate": not created}
                return out, (201 if created else 200)
            except ledger.ConsentError as exc:
                abort(422, message=str(exc), field=exc.field)
            except ledger.UnknownSubject:
                abort(404, message="profile_id: no such profile")
            except (IntegrityError, OperationalError):
                # Lost a race for the ledger head (or the same idempotency key): try again.
                if attempt == 2:
                    raise


@blp.route("/consents/<profile_id>")
class SubjectConsents(MethodView):
    @require_scope("consents:read")
    @blp.arguments(ConsentQuery, location="query")
    @blp.response(200, SubjectConsentsOut)
    def get(self, args, profile_id):
        """Current state per purpose (allowed or not, and why) and the history of events.

        Decrypted evidence (IP, user agent) needs include_evidence=true and the audit scope."""
        _profile_id(profile_id)
        runtime = _runtime()
        with runtime.session() as session:
            from consent.subjects import survivor

            subject = survivor(session, profile_id)
            if subject is None or subject.status != "active":
                abort(404, message="profile_id: no such profile")
            if args["include_evidence"] and not _has_scope(session, "audit"):
                abort(403, message="include_evidence needs the 'audit' scope")
            keys = runtime.keys(session)
            return {
                "profile_id": subject.id,
                "lineage": sorted(ledger.lineage(session, subject.id)),
                "states": ledger.states(session, subject.id),
                "history": ledger.history(session, keys, subject.id, args.get("purpose"),
                                          include_evidence=args["include_evidence"]),
            }


@blp.route("/consents/<profile_id>/receipt")
class Receipt(MethodView):
    @require_scope("consents:read")
    @blp.arguments(ReceiptQuery, location="query")
    @blp.response(200, ReceiptOut)
    def get(self, args, profile_id):
        """A consent receipt (Kantara CR v1.1 fields, LGPD extensions) signed as a JWS with the ledger key."""
        _profile_id(profile_id)
        runtime = _runtime()
        with runtime.session() as session:
            try:
                return receipts.build_receipt(session, runtime.keyring, runtime.settings, profile_id, args["lang"])
            except ledger.UnknownSubject:
                abort(404, message="profile_id: no such profile")


@blp.route("/purposes")
class Purposes(MethodView):
    @require_scope("consents:read")
    @blp.response(200, PurposeListOut)
    def get(self):
        """Every purpose with its legal basis, version, notice, retention and recipients."""
        with _runtime().session() as session:
            return {"purposes": [purpose_dict(session, p) for p in list_purposes(session)]}

    @require_scope("admin")
    @blp.arguments(PurposeIn)
    @blp.response(201, PurposeOut)
    def post(self, body):
        """Declare a purpose (a legal basis is required; sensitive purposes take only Art. 11 bases)."""
        with _runtime().session() as session:
            try:
                return purpose_dict(session, create_purpose(session, body))
            except PurposeError as exc:
                abort(409 if "already exists" in str(exc) else 422, message=str(exc), field=exc.field)


@blp.route("/purposes/<name>")
class PurposeItem(MethodView):
    @require_scope("consents:read")
    @blp.response(200, PurposeOut)
    def get(self, name):
        with _runtime().session() as session:
            purpose = get_purpose(session, name)
            if purpose is None:
                abort(404, message="name: no such purpose")
            return purpose_dict(session, purpose)

    @require_scope("admin")
    @blp.arguments(PurposeUpdate)
    @blp.response(200, PurposeOut)
    def patch(self, body, name):
        """Change a purpose. Changing what it is (basis, description, recipients,
        sensitivity) or `material: true` makes a new version: older grants stop counting."""
        with _runtime().session() as session:
            try:
                purpose, _ = update_purpose(session, name, body)
            except LookupError:
                abort(404, message="name: no such purpose")
            except PurposeError as exc:
                abort(422, message=str(exc), field=exc.field)
            return purpose_dict(session, purpose)


@blp.route("/ledger/verify")
class LedgerVerify(MethodView):
    @require_scope("audit")
    @blp.response(200, VerifyOut)
    def get(self):
        """Verify the whole chain; names the first bad sequence number."""
        runtime = _runtime()
        with runtime.session() as session:
            return ledger.verify(session, runtime.keyring)

    @require_scope("audit")
    @blp.arguments(CheckpointIn)
    @blp.response(200, VerifyOut)
    def post(self, body):
        """Verify the chain and that it still matches a signed checkpoint exported earlier."""
        runtime = _runtime()
        with runtime.session() as session:
            try:
                return ledger.verify(session, runtime.keyring, checkpoint=body["checkpoint"])
            except SignatureError as exc:
                abort(422, message=f"checkpoint: {exc}", field="checkpoint")


@blp.route("/ledger/checkpoints")
class LedgerCheckpoints(MethodView):
    @require_scope("audit")
    @blp.response(201, CheckpointOut)
    def post(self):
        """Sign the current (verified) head: keep the result outside the database."""
        runtime = _runtime()
        with runtime.session() as session:
            try:
                return ledger.checkpoint(session, runtime.keyring)
            except ledger.LedgerError as exc:
                abort(409, message=str(exc))
