"""Data-subject requests (LGPD Art. 18–20): opening, identity verification,
the lifecycle and its audit trail, deadlines, and the queries the DPO
console needs. Every function here is a service the API, the CLI and the
console call; none of them trusts its caller for anything but its inputs.

Identity before anything: a request is opened with identifiers the
requester types, but nothing is released or erased until a one-time code,
sent to a contact, comes back. Codes go to the contacts the requester typed
(proving control of that contact) and, for documents (CPF/CNPJ), to the
contact *on file* of the profile holding the document — never to a contact
the requester typed for someone else. After verification the search runs on
the verified contact only: an attacker's own e-mail plus a victim's phone
reaches the attacker's data, not the victim's.

Until verification every requester sees the same thing (same status code,
same body; the work that differs — finding a profile, sending codes — runs
after the response, in a job).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from marshmallow import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import Identifier, Profile, SourceRecord, new_id, utcnow
from cdp.store import KeyStore, Runtime
from consent.dsr import catalog
from consent.dsr.catalog import (COMPLETED, DENIED, IN_PROGRESS, OPEN_STATUSES, RECEIVED, REQUEST_TYPES, TRANSITIONS,
                                 VERIFIED)
from consent.dsr.deadlines import brasilia, deadline_days, due_at, end_of_day, local_date
from consent.dsr.models import DsrChallenge, DsrEvent, DsrRequest, DsrStep, DsrSystem
from identity import normalize as norm
from identity.resolve import decrypt_golden

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
CODE_DIGITS = 6
MIN_COMPARISONS = 4  # compare against at least this many hashes, known person or not
DUPLICATE_WINDOW = timedelta(days=30)
MAX_PROFILES_PER_CONTACT = 25  # same cap as identity resolution: a shared mailbox is no identity
IDENTIFIER_KINDS = ("email", "phone", "cpf", "cnpj")
CONTACT_KINDS = ("email", "phone")
LANGUAGES = ("pt-BR", "en")
NORMALIZERS = {"email": norm.normalize_email, "phone": norm.normalize_phone, "cpf": norm.normalize_cpf,
               "cnpj": norm.normalize_cnpj}
OPEN_SYSTEM_STATUSES = ("pending", "failed", "manual")


class DsrError(ValueError):
    """Bad input; `field` names it (API: 422 problem+json, CLI: exit 2)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidState(DsrError):
    """The request is not in a state that allows this (API: 409)."""


class RequestNotFound(LookupError):
    """No such request (or, for a requester, a wrong tracking token: same answer)."""


# -- small helpers ---------------------------------------------------------------------------

def _aad(request_id: str, field_name: str) -> tuple[str, str, str]:
    return ("dsr_requests", request_id, field_name)


def encrypt_for(keys: KeyStore, req: DsrRequest, field_name: str, value) -> bytes:
    return crypto.encrypt_json(keys.get(req.key_id), value, *_aad(req.id, field_name))


def decrypt_for(keys: KeyStore, req: DsrRequest, field_name: str, ciphertext: bytes | None):
    if ciphertext is None:
        return None
    return crypto.decrypt_json(keys.get(req.key_id), ciphertext, *_aad(req.id, field_name))


def claims(keys: KeyStore, req: DsrRequest) -> dict:
    return decrypt_for(keys, req, "claims", req.claims_ct) or {"identifiers": {}, "details": {}}


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _require(session: Session, request_id: str) -> DsrRequest:
    req = session.get(DsrRequest, request_id) if _is_uuid(request_id) else None
    if req is None:
        raise RequestNotFound("no such request")
    return req


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def audit(session: Session, keys: KeyStore | None, req: DsrRequest, actor: str, action: str,
          from_status: str | None = None, to_status: str | None = None, detail: dict | None = None,
          note: str | None = None) -> None:
    """One line of the audit trail. `detail` must hold no personal data; a
    free-text note is encrypted under the request key."""
    note_ct = None
    if note:
        note_ct = crypto.encrypt_json(keys.get(req.key_id), note, "dsr_events", req.id, f"note:{action}")
    session.add(DsrEvent(request_id=req.id, at=utcnow(), actor=actor, action=action, from_status=from_status,
                         to_status=to_status, detail=detail or {}, note_ct=note_ct))


def transition(session: Session, keys: KeyStore | None, req: DsrRequest, to: str, actor: str, action: str,
               detail: dict | None = None, note: str | None = None) -> None:
    if to not in TRANSITIONS[req.status]:
        raise InvalidState("status", f"a request that is {req.status} cannot become {to}")
    before = req.status
    req.status = to
    req.updated_at = utcnow()
    if to in (COMPLETED, DENIED):
        req.closed_at = req.updated_at
    audit(session, keys, req, actor, action, before, to, detail, note)
    log.info("dsr request=%s %s -> %s by=%s", req.id, before, to, actor.split(":", 1)[0])


# -- identifiers -----------------------------------------------------------------------------

def normalize_identifiers(raw: dict | None) -> dict[str, str]:
    """Canonical identifiers; a value that is not a valid e-mail, phone, CPF
    or CNPJ is a DsrError naming it (format only: says nothing about whether
    anyone holds it)."""
    if not isinstance(raw, dict) or not raw:
        raise DsrError("identifiers", "give at least one of email, phone, cpf, cnpj")
    out: dict[str, str] = {}
    for kind, value in raw.items():
        if kind not in NORMALIZERS:
            raise DsrError(f"identifiers.{kind}", "unknown identifier; use email, phone, cpf or cnpj")
        if not isinstance(value, str) or not value.strip() or len(value) > 320:
            raise DsrError(f"identifiers.{kind}", "must be a non-empty text of up to 320 characters")
        try:
            result = NORMALIZERS[kind](value)
        except norm.NormalizationError:
            result = None
        if result is None or not result.valid:
            raise DsrError(f"identifiers.{kind}", f"is not a valid {kind}")
        out[kind] = result.value
    return out


def blind_index(keyring: crypto.Keyring, kind: str, value: str) -> bytes:
    return keyring.blind_index(kind, value)


def profiles_holding(session: Session, kind: str, bi: bytes) -> list[str]:
    """Profiles holding data (active, or blocked: still held) with a record carrying this identifier."""
    rows = session.scalars(
        select(SourceRecord.profile_id)
        .join(Identifier, Identifier.record_id == SourceRecord.id)
        .join(Profile, Profile.id == SourceRecord.profile_id)
        .where(Identifier.kind == kind, Identifier.blind_index == bi, Profile.status.in_(("active", "blocked")))
        .distinct().limit(MAX_PROFILES_PER_CONTACT + 1)
    ).all()
    return [] if len(rows) > MAX_PROFILES_PER_CONTACT else sorted(rows)


def _claims_hash(keyring: crypto.Keyring, type_: str, identifiers: dict[str, str]) -> bytes:
    return keyring.keyed_hash("dsr-claims", type_, *(f"{k}={identifiers[k]}" for k in sorted(identifiers)))


# -- details per type ------------------------------------------------------------------------

def _validate_details(type_: str, details) -> dict:
    details = details or {}
    if not isinstance(details, dict):
        raise DsrError("details", "must be an object")
    allowed = {"message"}
    if type_ == "correction":
        allowed |= {"changes"}
    if type_ == "consent_revocation":
        allowed |= {"purposes"}
    if type_ == "automated_review":
        allowed |= {"decision"}
    for key in details:
        if key not in allowed:
            raise DsrError(f"details.{key}", f"unknown field for a {type_} request")
    for key in ("message", "decision"):
        if key in details and (not isinstance(details[key], str) or len(details[key]) > 4000):
            raise DsrError(f"details.{key}", "must be a text of up to 4000 characters")
    if type_ == "correction":
        changes = details.get("changes")
        if not isinstance(changes, dict) or not changes or set(changes) - {"traits", "identifiers"}:
            raise DsrError("details.changes", "give the corrected values as {\"traits\": {...}, \"identifiers\": {...}}")
        correction_payload(changes)  # raises naming the field
    if type_ == "consent_revocation" and "purposes" in details:
        purposes = details["purposes"]
        if not isinstance(purposes, list) or not all(isinstance(p, str) and 0 < len(p) <= 64 for p in purposes):
            raise DsrError("details.purposes", "must be a list of purpose names")
    return details


def correction_payload(changes: dict) -> dict:
    """The corrected values through the common record model (same validation as ingestion)."""
    from cdp.ingest import normalize_record
    from schemas.record import flatten_errors, load_record

    try:
        data = load_record({"external_id": "correction", **changes}, "dsr_correction")
        return normalize_record(data, {})
    except ValidationError as exc:
        errors = flatten_errors(exc.messages)
        name = next(iter(errors), "changes")
        raise DsrError(f"details.changes.{name}", " ".join(errors.get(name, ["is invalid"]))) from None


# -- opening ---------------------------------------------------------------------------------

@dataclass
class Opened:
    request_id: str
    token: str  # the requester's tracking token: shown once, stored as a hash
    status: str = RECEIVED
    duplicate_of: str | None = None


def open_request(runtime: Runtime, *, type: str, identifiers: dict, language: str = "pt-BR",
                 details: dict | None = None, actor: str = "subject", channel: str = "public") -> Opened:
    """Register a request. Does not look anyone up: that happens in
    `dispatch_codes`, after the requester has had the same answer as everyone."""
    if type not in REQUEST_TYPES:
        raise DsrError("type", f"must be one of {', '.join(REQUEST_TYPES)}")
    if language not in LANGUAGES:
        raise DsrError("language", "must be pt-BR or en")
    ids = normalize_identifiers(identifiers)
    details = _validate_details(type, details)
    now = utcnow()
    token = secrets.token_urlsafe(32)
    with runtime.session() as session:
        keys = runtime.keys(session)
        digest = _claims_hash(runtime.keyring, type, ids)
        primary = session.scalar(
            select(DsrRequest.id).where(DsrRequest.claims_hash == digest, DsrRequest.type == type,
                                        DsrRequest.status.in_(OPEN_STATUSES), DsrRequest.duplicate_of.is_(None),
                                        DsrRequest.created_at >= now - DUPLICATE_WINDOW)
            .order_by(DsrRequest.created_at).limit(1))
        key_id, _ = keys.create()
        req = DsrRequest(id=new_id(), type=type, status=RECEIVED, channel=channel, language=language,
                         requested_by=actor, key_id=key_id, claims_hash=digest, token_hash=_token_hash(token),
                         duplicate_of=primary, attempts=0, scope=[], created_at=now, updated_at=now,
                         due_at=due_at(now, deadline_days(runtime.settings)))
        req.claims_ct = encrypt_for(keys, req, "claims", {"identifiers": ids, "details": details})
        session.add(req)
        session.flush()
        audit(session, keys, req, actor, "opened", None, RECEIVED,
              {"type": type, "channel": channel, "identifier_kinds": sorted(ids), "duplicate_of": primary})
    return Opened(req.id, token, RECEIVED, primary)


def _new_code() -> str:
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def _code_hash(keyring: crypto.Keyring, challenge: DsrChallenge, code: str) -> bytes:
    return keyring.keyed_hash("dsr-code", challenge.request_id, challenge.id, code)


def _live_challenges(session: Session, request_ids: list[str], now: datetime) -> list[DsrChallenge]:
    return list(session.scalars(select(DsrChallenge).where(
        DsrChallenge.request_id.in_(request_ids), DsrChallenge.used_at.is_(None), DsrChallenge.expires_at > now)
        .order_by(DsrChallenge.created_at, DsrChallenge.id)))


def _contact_on_file(keys: KeyStore, profile: Profile) -> tuple[str, str] | None:
    golden = decrypt_golden(keys, profile).get("identifiers", {})
    for kind in CONTACT_KINDS:
        if golden.get(kind):
            return kind, golden[kind][0]
    return None


def dispatch_codes(runtime: Runtime, request_id: str) -> int:
    """Send one-time codes for a request (runs after the requester's answer,
    in a job). Returns how many codes went out."""
    from consent import notify

    now = utcnow()
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        if req is None or req.status != RECEIVED:
            return 0
        keys = runtime.keys(session)
        if req.duplicate_of and _live_challenges(session, [req.duplicate_of, req.id], now):
            # A flood of identical requests: the code already sent covers them (it verifies whichever is entered).
            audit(session, keys, req, "system", "codes_not_resent", detail={"reason": "duplicate_with_live_code"})
            return 0
        ids = claims(keys, req)["identifiers"]
        contacts: dict[tuple[str, bytes], str] = {}
        for kind in CONTACT_KINDS:
            if kind in ids:
                contacts[(kind, blind_index(runtime.keyring, kind, ids[kind]))] = ids[kind]
        for kind in ("cpf", "cnpj"):
            if kind not in ids:
                continue
            for pid in profiles_holding(session, kind, blind_index(runtime.keyring, kind, ids[kind])):
                found = _contact_on_file(keys, session.get(Profile, pid))
                if found:
                    contacts[(found[0], blind_index(runtime.keyring, *found))] = found[1]
        # A new round of codes replaces the old one.
        session.execute(update(DsrChallenge).where(DsrChallenge.request_id == req.id, DsrChallenge.used_at.is_(None))
                        .values(expires_at=now))
        s = runtime.settings
        for (kind, bi), value in contacts.items():
            code = _new_code()
            challenge = DsrChallenge(id=new_id(), request_id=req.id, contact_kind=kind, contact_index=bi,
                                     code_hash=b"", expires_at=now + CODE_TTL, created_at=now)
            challenge.code_hash = _code_hash(runtime.keyring, challenge, code)
            challenge.contact_ct = encrypt_for(keys, req, f"challenge:{challenge.id}", value)
            session.add(challenge)
            notify.queue_message(session, keys, channel=kind, to=value, template="code", language=req.language,
                                 request_id=req.id, context={
                                     "code": code, "minutes": int(CODE_TTL.total_seconds() // 60),
                                     "type_label": catalog.type_label(req.type, req.language),
                                     "request_ref": req.id[:8], "controller": s.controller_name,
                                     "dpo": s.dpo_name, "dpo_contact": s.dpo_contact})
        audit(session, keys, req, "system", "codes_sent", detail={"count": len(contacts)})
    notify.deliver_pending(runtime, request_id=request_id)
    return len(contacts)


# -- verification ----------------------------------------------------------------------------

@dataclass
class VerifyResult:
    verified: bool
    status: str
    attempts_left: int


def _token_ok(req: DsrRequest, token: str | None) -> bool:
    expected = req.token_hash or b"\0" * 32
    return hmac.compare_digest(expected, _token_hash(token or ""))


def verify_code(runtime: Runtime, request_id: str, token: str | None, code: str, *,
                actor: str | None = None) -> VerifyResult:
    """The requester enters the code. Single use, CODE_TTL long, MAX_ATTEMPTS
    per request, compared in constant time against every live code.
    With `actor` (signed-in staff typing the code the subject read out to
    them, DPO console) no tracking token is needed; the audit names the actor."""
    who = actor or "subject"
    code = "".join(c for c in str(code or "") if c.isdigit())[:CODE_DIGITS + 2]
    now = utcnow()
    submit = False
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id) if _is_uuid(request_id) else None
        if req is None or (actor is None and not _token_ok(req, token)):
            raise RequestNotFound("no such request")
        if req.status != RECEIVED:
            return VerifyResult(req.status != DENIED, req.status, max(0, MAX_ATTEMPTS - req.attempts))
        keys = runtime.keys(session)
        if req.attempts >= MAX_ATTEMPTS:
            audit(session, keys, req, who, "verification_locked")
            return VerifyResult(False, RECEIVED, 0)
        req.attempts += 1
        challenges = _live_challenges(session, [r for r in (req.id, req.duplicate_of) if r], now)
        matched = None
        dummy = DsrChallenge(id="-", request_id=req.id, code_hash=secrets.token_bytes(32))
        for ch in challenges + [dummy] * max(0, MIN_COMPARISONS - len(challenges)):
            ok = hmac.compare_digest(ch.code_hash, _code_hash(runtime.keyring, ch, code))
            if ok and matched is None and ch is not dummy:
                matched = ch
        if matched is None:
            audit(session, keys, req, who, "verification_failed", detail={"attempt": req.attempts})
            return VerifyResult(False, RECEIVED, MAX_ATTEMPTS - req.attempts)
        matched.used_at = now
        session.execute(update(DsrChallenge).where(DsrChallenge.request_id.in_([r for r in (req.id, req.duplicate_of)
                                                                                 if r]),
                                                   DsrChallenge.used_at.is_(None)).values(expires_at=now))
        owner = req if matched.request_id == req.id else session.get(DsrRequest, matched.request_id)
        contact = decrypt_for(keys, owner, f"challenge:{matched.id}", matched.contact_ct)
        req.contact_ct = encrypt_for(keys, req, "contact", {"channel": matched.contact_kind, "to": contact})
        scope, note = _scope_for_contact(session, runtime.keyring, matched.contact_kind, matched.contact_index,
                                         claims(keys, req)["identifiers"])
        req.scope, req.scope_note = scope, note
        req.verified_at, req.verified_by = now, "subject:code"
        transition(session, keys, req, VERIFIED, who, "identity_verified",
                   {"method": "code", "contact_kind": matched.contact_kind, "profiles": len(scope), "scope": note})
        submit = REQUEST_TYPES[req.type].auto and note != "ambiguous"
        status = req.status
    if submit:
        from consent.dsr.jobs import submit_execution

        submit_execution(runtime, request_id)
    return VerifyResult(True, status, MAX_ATTEMPTS - req.attempts)


def _scope_for_contact(session: Session, keyring: crypto.Keyring, kind: str, bi: bytes,
                       claimed: dict[str, str]) -> tuple[list[str], str]:
    """Profiles the verified contact reaches. A contact shared by people
    with different valid CPFs (a family e-mail) is narrowed by the CPF the
    requester gave; without one the request goes to staff ("ambiguous")."""
    profiles = profiles_holding(session, kind, bi)
    if not profiles:
        return [], "none"
    cpfs: dict[str, set[bytes]] = {p: set() for p in profiles}
    for pid, cpf_bi in session.execute(
        select(SourceRecord.profile_id, Identifier.blind_index)
        .join(Identifier, Identifier.record_id == SourceRecord.id)
        .where(SourceRecord.profile_id.in_(profiles), Identifier.kind == "cpf")
    ):
        cpfs[pid].add(cpf_bi)
    distinct = set().union(*cpfs.values())
    if len(distinct) <= 1:
        return profiles, "contact"
    if "cpf" in claimed:
        wanted = blind_index(keyring, "cpf", claimed["cpf"])
        narrowed = [p for p in profiles if wanted in cpfs[p]]
        if narrowed:
            return narrowed, "contact_and_cpf"
    return [], "ambiguous"


def verify_by_staff(runtime: Runtime, request_id: str, *, actor: str, profile_ids: list[str], note: str,
                    contact: dict | None = None) -> dict:
    """Staff confirmed the identity out of band (documents at a counter, a
    signed letter): they name the profiles and say how (`note`, encrypted).
    `contact` ({"channel": "email", "to": ...}) is where answers go; default:
    the first profile's contact on file."""
    if not note or not note.strip():
        raise DsrError("note", "say how the identity was verified")
    if contact is not None and (contact.get("channel") not in CONTACT_KINDS or not contact.get("to")):
        raise DsrError("contact", "give {\"channel\": \"email\" or \"phone\", \"to\": ...}")
    submit = False
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.status not in (RECEIVED, VERIFIED) or (req.status == VERIFIED and req.scope_note != "ambiguous"):
            raise InvalidState("status", f"a request that is {req.status} cannot be verified")
        keys = runtime.keys(session)
        from consent.subjects import survivor

        scope = []
        for pid in dict.fromkeys(profile_ids or []):
            profile = survivor(session, pid) if _is_uuid(pid) else None
            if profile is None or profile.status != "active":
                raise DsrError("profile_ids", "each must name an existing, active profile")
            scope.append(profile.id)
        if contact is None and scope:
            found = _contact_on_file(keys, session.get(Profile, scope[0]))
            contact = {"channel": found[0], "to": found[1]} if found else None
        if contact:
            req.contact_ct = encrypt_for(keys, req, "contact", contact)
        req.scope, req.scope_note = sorted(scope), "staff" if scope else "none"
        req.verified_at, req.verified_by = utcnow(), actor
        if req.status == RECEIVED:
            transition(session, keys, req, VERIFIED, actor, "identity_verified",
                       {"method": "staff", "profiles": len(scope)}, note)
        else:
            audit(session, keys, req, actor, "scope_set", detail={"profiles": len(scope)}, note=note)
        submit = REQUEST_TYPES[req.type].auto
    if submit:
        from consent.dsr.jobs import submit_execution

        submit_execution(runtime, request_id)
    return get_request(runtime, request_id)


# -- staff actions ---------------------------------------------------------------------------

def execute(runtime: Runtime, request_id: str, *, actor: str) -> dict:
    """Run (or resume, or re-run after a failure) a verified request, as a job."""
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.status not in (VERIFIED, IN_PROGRESS):
            raise InvalidState("status", f"a request that is {req.status} cannot be executed"
                               + (" (verify the identity first)" if req.status == RECEIVED else ""))
        if req.scope_note == "ambiguous":
            raise InvalidState("scope", "the verified contact is shared by several people: set the profiles first")
        if req.type == "automated_review":
            raise InvalidState("type", "a review of an automated decision is answered by a person: use respond")
        audit(session, None, req, actor, "execution_requested")
    from consent.dsr.jobs import submit_execution

    submit_execution(runtime, request_id)
    return get_request(runtime, request_id)


def deny(runtime: Runtime, request_id: str, *, actor: str, reason_code: str, reason_text: str | None = None) -> dict:
    """Close a request unmet, with the reason the subject is shown (Art. 18 §4)."""
    if reason_code not in catalog.DENIAL_REASONS:
        raise DsrError("reason_code", f"must be one of {', '.join(catalog.DENIAL_REASONS)}")
    if reason_code in ("not_controller", "other") and not (reason_text or "").strip():
        raise DsrError("reason_text", "explain (for not_controller: name the agent responsible)")
    with runtime.session() as session:
        req = _require(session, request_id)
        started = session.scalar(select(DsrStep.id).where(DsrStep.request_id == req.id, DsrStep.name == "suppress",
                                                          DsrStep.status == "done"))
        if started is not None:
            raise InvalidState("status", "the erasure is under way: finish it (execute), it cannot be denied now")
        keys = runtime.keys(session)
        req.denial_code = reason_code
        req.outcome = "denied"
        if reason_text:
            req.result_ct = encrypt_for(keys, req, "result", {"denial_text": reason_text})
        transition(session, keys, req, DENIED, actor, "denied", {"reason_code": reason_code}, reason_text)
        reason = catalog.denial_text(reason_code, req.language) + (f"\n{reason_text}" if reason_text else "")
        notify_subject(session, keys, runtime.settings, req, "denied", {"reason": reason})
    _deliver(runtime, request_id)
    return get_request(runtime, request_id)


def extend(runtime: Runtime, request_id: str, *, actor: str, reason: str, days: int | None = None,
           until: datetime | None = None) -> dict:
    """Move the deadline (a reason is required; the subject is told)."""
    if not reason or not reason.strip():
        raise DsrError("reason", "an extension needs a reason")
    if (days is None) == (until is None):
        raise DsrError("days", "give either days or a new due date")
    if days is not None and not 1 <= days <= 365:
        raise DsrError("days", "must be between 1 and 365")
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.status not in OPEN_STATUSES:
            raise InvalidState("status", f"a request that is {req.status} has no deadline to extend")
        keys = runtime.keys(session)
        before = req.due_at
        new_due = end_of_day(local_date(before) + timedelta(days=days)) if days else end_of_day(local_date(until))
        if new_due <= before:
            raise DsrError("until", "the new due date must be after the current one")
        req.due_at, req.updated_at = new_due, utcnow()
        audit(session, keys, req, actor, "deadline_extended",
              detail={"from": before.isoformat(), "to": new_due.isoformat()}, note=reason)
        notify_subject(session, keys, runtime.settings, req, "extended",
                       {"due": _fmt_due(new_due, req.language), "reason": reason})
    _deliver(runtime, request_id)
    return get_request(runtime, request_id)


def pause(runtime: Runtime, request_id: str, *, actor: str, reason: str) -> dict:
    """Stop the clock (e.g. waiting for the subject); the time paused is added back on resume."""
    if not reason or not reason.strip():
        raise DsrError("reason", "a pause needs a reason")
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.status not in OPEN_STATUSES or req.paused_at is not None:
            raise InvalidState("status", "only an open, running request can be paused")
        req.paused_at = utcnow()
        audit(session, runtime.keys(session), req, actor, "deadline_paused", note=reason)
    return get_request(runtime, request_id)


def resume(runtime: Runtime, request_id: str, *, actor: str, reason: str | None = None) -> dict:
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.paused_at is None:
            raise InvalidState("status", "the request is not paused")
        now = utcnow()
        paused_for = now - req.paused_at
        before = req.due_at
        req.due_at, req.paused_at = before + paused_for, None
        audit(session, runtime.keys(session), req, actor, "deadline_resumed",
              detail={"paused_seconds": int(paused_for.total_seconds()), "from": before.isoformat(),
                      "to": req.due_at.isoformat()}, note=reason)
    return get_request(runtime, request_id)


def confirm_system(runtime: Runtime, request_id: str, system: str, *, actor: str, status: str = "done",
                   note: str | None = None) -> dict:
    """A person confirms a manual task (or records that a system failed)."""
    if status not in ("done", "failed"):
        raise DsrError("status", "must be done or failed")
    with runtime.session() as session:
        req = _require(session, request_id)
        row = session.scalar(select(DsrSystem).where(DsrSystem.request_id == req.id, DsrSystem.system == system))
        if row is None:
            raise DsrError("system", "no such system for this request")
        if req.status != IN_PROGRESS:
            raise InvalidState("status", f"a request that is {req.status} has no open systems")
        row.status, row.confirmed_by, row.updated_at = status, actor, utcnow()
        audit(session, runtime.keys(session), req, actor, "system_confirmed",
              detail={"system": system, "status": status}, note=note)
    if status == "done":
        from consent.dsr.jobs import submit_execution

        submit_execution(runtime, request_id)  # finishes the request once nothing is open
    return get_request(runtime, request_id)


def respond(runtime: Runtime, request_id: str, *, actor: str, message: str) -> dict:
    """Complete a request with an answer written by a person (review of an
    automated decision, Art. 20; or any request answered by hand)."""
    if not message or not message.strip():
        raise DsrError("message", "the answer cannot be empty")
    with runtime.session() as session:
        req = _require(session, request_id)
        if req.status not in (VERIFIED, IN_PROGRESS):
            raise InvalidState("status", f"a request that is {req.status} cannot be answered"
                               + (" (verify the identity first)" if req.status == RECEIVED else ""))
        keys = runtime.keys(session)
        if req.status == VERIFIED:
            transition(session, keys, req, IN_PROGRESS, actor, "started")
        req.result_ct = encrypt_for(keys, req, "result", {"answer": message})
        req.outcome = "answered"
        transition(session, keys, req, COMPLETED, actor, "completed", {"outcome": "answered"}, message)
        notify_subject(session, keys, runtime.settings, req, "completed", {"summary": message})
    _deliver(runtime, request_id)
    return get_request(runtime, request_id)


# -- notifications ---------------------------------------------------------------------------

def _fmt_due(moment: datetime, language: str) -> str:
    from consent.dsr.deadlines import brasilia_text

    return brasilia_text(moment, language)


def notify_subject(session: Session, keys: KeyStore, settings, req: DsrRequest, template: str, context: dict) -> bool:
    """Queue a message to the request's verified contact (none before verification)."""
    from consent import notify

    contact = decrypt_for(keys, req, "contact", req.contact_ct)
    if not contact:
        return False
    base = {"type_label": catalog.type_label(req.type, req.language), "request_ref": req.id[:8],
            "controller": settings.controller_name, "dpo": settings.dpo_name, "dpo_contact": settings.dpo_contact}
    notify.queue_message(session, keys, channel=contact["channel"], to=contact["to"], template=template,
                         language=req.language, request_id=req.id, context={**base, **context})
    return True


def _deliver(runtime: Runtime, request_id: str) -> None:
    from consent import notify

    notify.deliver_pending(runtime, request_id=request_id)


# -- reading ---------------------------------------------------------------------------------

def _is_overdue(req: DsrRequest, now: datetime) -> bool:
    return req.status in OPEN_STATUSES and req.paused_at is None and req.due_at < now


def summary(req: DsrRequest, now: datetime | None = None, open_systems: int = 0) -> dict:
    """A request as lists show it: no personal data."""
    now = now or utcnow()
    return {
        "id": req.id, "type": req.type, "article": REQUEST_TYPES[req.type].article, "status": req.status,
        "channel": req.channel, "language": req.language, "created_at": brasilia(req.created_at),
        "due_at": brasilia(req.due_at), "paused": req.paused_at is not None, "overdue": _is_overdue(req, now),
        "outcome": req.outcome, "denial_code": req.denial_code, "duplicate_of": req.duplicate_of,
        "verified_at": brasilia(req.verified_at), "scope": req.scope_note, "profiles": len(req.scope or []),
        "open_systems": open_systems, "closed_at": brasilia(req.closed_at),
    }


def list_requests(runtime: Runtime, *, status: str | None = None, type: str | None = None,
                  overdue: bool | None = None, due_before: datetime | None = None, limit: int = 100,
                  offset: int = 0) -> list[dict]:
    """Requests for the console, oldest deadline first."""
    if status is not None and status not in catalog.STATUSES:
        raise DsrError("status", f"must be one of {', '.join(catalog.STATUSES)}")
    if type is not None and type not in REQUEST_TYPES:
        raise DsrError("type", f"must be one of {', '.join(REQUEST_TYPES)}")
    now = utcnow()
    query = select(DsrRequest).order_by(DsrRequest.due_at, DsrRequest.id)
    if status:
        query = query.where(DsrRequest.status == status)
    if type:
        query = query.where(DsrRequest.type == type)
    if overdue:
        query = query.where(DsrRequest.status.in_(OPEN_STATUSES), DsrRequest.paused_at.is_(None),
                            DsrRequest.due_at < now)
    if due_before is not None:
        query = query.where(DsrRequest.status.in_(OPEN_STATUSES), DsrRequest.due_at <= due_before)
    with runtime.session() as session:
        rows = session.scalars(query.limit(max(1, min(limit, 1000))).offset(max(0, offset))).all()
        open_counts = _open_systems(session, [r.id for r in rows])
        return [summary(r, now, open_counts.get(r.id, 0)) for r in rows]


def due_soon(runtime: Runtime, within_days: int = 3) -> list[dict]:
    """Open requests due within the next `within_days` days (and overdue ones)."""
    return list_requests(runtime, due_before=utcnow() + timedelta(days=within_days))


def overdue(runtime: Runtime) -> list[dict]:
    return list_requests(runtime, overdue=True)


def _open_systems(session: Session, request_ids: list[str]) -> dict[str, int]:
    if not request_ids:
        return {}
    return dict(session.execute(
        select(DsrSystem.request_id, func.count()).where(DsrSystem.request_id.in_(request_ids),
                                                         DsrSystem.status.in_(OPEN_SYSTEM_STATUSES))
        .group_by(DsrSystem.request_id)).all())


def get_request(runtime: Runtime, request_id: str, *, include_personal: bool = False,
                actor: str | None = None) -> dict:
    """Everything about one request for staff: steps, systems, audit trail.
    With include_personal, the identifiers and details the requester gave
    (decrypted; the access is itself audited)."""
    with runtime.session() as session:
        req = _require(session, request_id)
        keys = runtime.keys(session)
        out = summary(req, open_systems=_open_systems(session, [req.id]).get(req.id, 0))
        out["steps"] = [{"name": s.name, "status": s.status, "attempts": s.attempts, "error": s.error,
                         "finished_at": brasilia(s.finished_at)}
                        for s in session.scalars(select(DsrStep).where(DsrStep.request_id == req.id)
                                                 .order_by(DsrStep.position))]
        out["systems"] = [{"system": s.system, "kind": s.kind, "action": s.action, "status": s.status,
                           "detail": s.detail, "attempts": s.attempts, "confirmed_by": s.confirmed_by}
                          for s in session.scalars(select(DsrSystem).where(DsrSystem.request_id == req.id)
                                                   .order_by(DsrSystem.system))]
        if include_personal and req.purged_at is None:
            out["claims"] = claims(keys, req)
            audit(session, keys, req, actor or "staff", "personal_data_viewed")
            session.flush()
        out["audit"] = audit_trail(session, req.id)
        out["profile_ids"] = list(req.scope or [])
        return out


def audit_trail(session: Session, request_id: str) -> list[dict]:
    return [{"at": brasilia(e.at), "actor": e.actor, "action": e.action, "from": e.from_status, "to": e.to_status,
             "detail": e.detail, "has_note": e.note_ct is not None}
            for e in session.scalars(select(DsrEvent).where(DsrEvent.request_id == request_id)
                                     .order_by(DsrEvent.at, DsrEvent.id))]


def subject_status(runtime: Runtime, request_id: str, token: str) -> dict:
    """What the requester sees with their tracking token. Before
    verification it is the same for everyone."""
    from consent.dsr.report import download_links

    with runtime.session() as session:
        req = session.get(DsrRequest, request_id) if _is_uuid(request_id) else None
        if req is None or not _token_ok(req, token):
            raise RequestNotFound("no such request")
        out = {"request_id": req.id, "type": req.type, "status": req.status,
               "created_at": brasilia(req.created_at), "due_at": brasilia(req.due_at)}
        if req.status == DENIED:
            keys = runtime.keys(session)
            out["denial"] = {"code": req.denial_code, "reason": catalog.denial_text(req.denial_code, req.language)}
            if req.purged_at is None and req.result_ct is not None:
                out["denial"]["detail"] = (decrypt_for(keys, req, "result", req.result_ct) or {}).get("denial_text")
        if req.status == COMPLETED:
            out["outcome"] = req.outcome
            if req.result_ct is not None and req.purged_at is None and req.type in ("access", "portability",
                                                                                    "sharing_info", "confirmation",
                                                                                    "consent_info"):
                out["downloads"] = download_links(runtime, req.id)
        return out


# -- housekeeping --------------------------------------------------------------------------------

UNVERIFIED_LIFETIME = timedelta(days=7)
CLOSED_RETENTION = timedelta(days=30)


def expire_unverified(runtime: Runtime, older_than: timedelta = UNVERIFIED_LIFETIME) -> int:
    """Deny requests whose identity was never verified (the same for known
    and unknown people: nothing is said but "identity not verified")."""
    cutoff = utcnow() - older_than
    with runtime.session() as session:
        rows = session.scalars(select(DsrRequest).where(DsrRequest.status == RECEIVED,
                                                        DsrRequest.created_at < cutoff)).all()
        for req in rows:
            req.denial_code, req.outcome = "identity_not_verified", "denied"
            transition(session, None, req, DENIED, "system", "expired_unverified")
        return len(rows)


def purge_closed(runtime: Runtime, older_than: timedelta = CLOSED_RETENTION) -> int:
    """Shred what closed requests hold about the person (what they typed,
    the report, the answer, the contact) once the download window and the
    retention period are over. The request, its steps and audit trail stay
    (no personal data) as the record that the right was served."""
    cutoff = utcnow() - older_than
    with runtime.session() as session:
        rows = session.scalars(select(DsrRequest).where(DsrRequest.status.in_((COMPLETED, DENIED)),
                                                        DsrRequest.closed_at < cutoff,
                                                        DsrRequest.purged_at.is_(None))).all()
        keys = runtime.keys(session)
        for req in rows:
            keys.destroy([req.key_id])
            req.claims_ct = req.result_ct = req.package_ct = req.contact_ct = None
            req.purged_at = utcnow()
            audit(session, None, req, "system", "personal_data_purged")
        return len(rows)
