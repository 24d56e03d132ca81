"""Erasure of a data subject (Art. 18 IV and VI, Art. 16), and the
guarantees around it.

The steps (run by consent.dsr.execute, each in one transaction):

1. snapshot — the subject's records and keys; the legal-hold check first:
   records kept by legal obligation (invoices...) stay, detached from the
   profile and blocked from every other use, and the answer says so;
2. suppress — keyed hashes of every identifier and of each record's
   (source, external id), behind the ingestion fence, plus an entry in the
   durable ERASURE LOG (a file outside the database, and a mirror table);
3. shred — the data keys of the profile(s), of every record and of the
   consent evidence are destroyed: every ciphertext, backups included, is
   unreadable from here on;
4. purge — blind indexes, record ciphertexts and versions, events and the
   golden record are deleted; the profile stays as a tombstone (status
   "deleted", no personal data);
5. extensions — features that derive data (segments...) erase theirs;
6. sweep — records of the subject that were ingested while the erasure ran
   (they passed the fence before the suppression committed) are erased too.

After a database restore, `reapply_erasures` replays the log: keys are
destroyed again, rows removed again, suppression entries put back — a
backup cannot bring a deleted person back.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import DataKey, Event, Identifier, Profile, RecordVersion, SourceRecord, utcnow
from cdp.store import Runtime
from consent import suppression
from consent.dsr.compat import consent_key_ids
from consent.dsr.execute import StepContext, encrypt_for, step, subject_package
from consent.dsr.models import ErasureEntry, LegalHold
from identity.resolve import decrypt_payload

log = logging.getLogger(__name__)

CHUNK = 500

# -- extension point: derived data ---------------------------------------------------------------
# A feature that derives personal data from profiles (segments, scores, audiences)
# registers fn(session, profile_ids) that erases its rows for those profiles.
ERASURE_HOOKS: list[Callable[[Session, list[str]], None]] = []


def register_erasure_hook(fn: Callable[[Session, list[str]], None]) -> None:
    if fn not in ERASURE_HOOKS:
        ERASURE_HOOKS.append(fn)


def _chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- legal holds --------------------------------------------------------------------------------

def add_legal_hold(runtime: Runtime, *, reason: str, retention_days: int, actor: str, source: str | None = None,
                   event_type: str | None = None, legal_basis: str = "legal_obligation") -> dict:
    """Declare data kept by law: records of `source`, or records carrying an
    event of `event_type` (e.g. "invoice")."""
    from consent.dsr.service import DsrError

    if not source and not event_type:
        raise DsrError("source", "name a source or an event type")
    if not reason or not reason.strip() or len(reason) > 300:
        raise DsrError("reason", "state the legal rule (up to 300 characters)")
    if not isinstance(retention_days, int) or not 1 <= retention_days <= 36500:
        raise DsrError("retention_days", "must be between 1 and 36500")
    if legal_basis not in ("legal_obligation", "exercise_of_rights", "credit_protection", "research"):
        raise DsrError("legal_basis", "must be legal_obligation, exercise_of_rights, credit_protection or research")
    with runtime.session() as session:
        hold = LegalHold(source=source, event_type=event_type, legal_basis=legal_basis, reason=reason.strip(),
                         retention_days=retention_days, created_by=actor)
        session.add(hold)
        session.flush()
        return hold_dict(hold)


def hold_dict(h: LegalHold) -> dict:
    return {"id": h.id, "source": h.source, "event_type": h.event_type, "legal_basis": h.legal_basis,
            "reason": h.reason, "retention_days": h.retention_days, "created_by": h.created_by,
            "created_at": h.created_at.isoformat()}


def list_legal_holds(runtime: Runtime) -> list[dict]:
    with runtime.session() as session:
        return [hold_dict(h) for h in session.scalars(select(LegalHold).order_by(LegalHold.id))]


def held_records(session: Session, records: list[SourceRecord]) -> dict[str, LegalHold]:
    """record id -> the hold that keeps it (preflight of every erasure)."""
    holds = session.scalars(select(LegalHold).order_by(LegalHold.id)).all()
    if not holds or not records:
        return {}
    out: dict[str, LegalHold] = {}
    by_source = {}
    for h in holds:
        if h.source:
            by_source.setdefault(h.source, h)
    for r in records:
        if r.source in by_source:
            out[r.id] = by_source[r.source]
    typed = {h.event_type: h for h in holds if h.event_type and not h.source}
    if typed:
        ids = [r.id for r in records if r.id not in out]
        for part in _chunks(ids):
            for record_id, event_type in session.execute(
                select(Event.record_id, Event.type).where(Event.record_id.in_(part), Event.type.in_(list(typed)))
            ):
                out.setdefault(record_id, typed[event_type])
    return out


# -- the erasure log (outside the database) ----------------------------------------------------

def _log_key(keyring: crypto.Keyring) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cdp:erasure-log").derive(keyring.signing_key)


def _mac(keyring: crypto.Keyring, entry: dict) -> str:
    body = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(_log_key(keyring), body, hashlib.sha256).hexdigest()


def log_path(settings) -> Path:
    return Path(settings.erasure_log or settings.instance_path / "erasure-log.jsonl")


def append_log(settings, keyring: crypto.Keyring, entry: dict) -> None:
    """Append one signed line and fsync: this copy survives a database restore."""
    path = log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"entry": entry, "mac": _mac(keyring, entry)}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(settings, keyring: crypto.Keyring) -> tuple[list[dict], int]:
    """(entries with a valid MAC, lines refused). The last entry per request wins."""
    path = log_path(settings)
    if not path.exists():
        return [], 0
    entries: dict[str, dict] = {}
    refused = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            entry, mac = data["entry"], data["mac"]
        except (ValueError, KeyError, TypeError):
            refused += 1
            continue
        if not hmac.compare_digest(mac, _mac(keyring, entry)):
            refused += 1
            continue
        entries[entry["request_id"]] = entry
    return list(entries.values()), refused


# -- the steps ------------------------------------------------------------------------------------

@step("snapshot")
def _snapshot(ctx: StepContext) -> dict:
    records = list(ctx.session.scalars(select(SourceRecord).where(SourceRecord.profile_id.in_(ctx.lineage))
                                       .order_by(SourceRecord.id)))
    holds = held_records(ctx.session, records)
    package = subject_package(ctx)
    ctx.req.package_ct = encrypt_for(ctx.keys, ctx.req, "package", package)
    keyring = ctx.runtime.keyring
    entries: set[tuple[str, bytes]] = set()
    sweep: set[tuple[str, bytes]] = set()
    cpfs: set[bytes] = set()
    ctx.keys.preload([r.key_id for r in records])
    for r in records:
        entries.add(suppression.external_hash(r.source, r.external_key))
        payloads = [decrypt_payload(ctx.keys, r)]
        dek = ctx.keys.get(r.key_id)
        for v in ctx.session.scalars(select(RecordVersion).where(RecordVersion.record_id == r.id)):
            payloads.append(crypto.decrypt_json(dek, v.payload_ct, "record_versions", f"{r.id}:{v.version}",
                                                "payload"))
        for payload in payloads:
            entries |= suppression.entries_for_payload(keyring, payload)
            for ident in payload.get("identifiers", []):
                if suppression.suppressible(ident):
                    bi = keyring.blind_index(ident["kind"], ident["value"])
                    sweep.add((ident["kind"], bi))
                    if ident["kind"] == "cpf":
                        cpfs.add(bi)
    profiles = list(ctx.session.scalars(select(Profile).where(Profile.id.in_(ctx.lineage))))
    for profile in profiles:
        if profile.status in ("active", "blocked"):
            profile.status = "erasing"  # resolution no longer attaches records to it
    kept = [r for r in records if r.id in holds]
    erased = [r for r in records if r.id not in holds]
    key_ids = sorted({r.key_id for r in erased} | {p.key_id for p in profiles}
                     | set(consent_key_ids(ctx.session, set(ctx.lineage))))
    return {
        "records": [r.id for r in erased],
        "held": [{"record_id": r.id, "source": r.source, "hold": holds[r.id].id, "reason": holds[r.id].reason,
                  "legal_basis": holds[r.id].legal_basis,
                  "until": (r.observed_at + timedelta(days=holds[r.id].retention_days)).date().isoformat()}
                 for r in kept],
        "keys": key_ids,
        "suppress": sorted([k, h.hex()] for k, h in entries),
        "sweep": sorted([k, b.hex()] for k, b in sweep),
        "cpfs": sorted(b.hex() for b in cpfs),
        "started_at": utcnow().isoformat(),
    }


def _log_entry(ctx: StepContext) -> dict:
    s = ctx.state
    return {"request_id": ctx.req.id, "at": utcnow().isoformat(), "profiles": ctx.lineage,
            "records": s["records"], "held": [h["record_id"] for h in s["held"]], "keys": s["keys"],
            "suppress": s["suppress"]}


@step("suppress")
def _suppress(ctx: StepContext) -> dict:
    suppression.erasure_fence(ctx.session)  # waits for batches being screened; holds new ones until commit
    added = suppression.add(ctx.session, [(k, bytes.fromhex(h)) for k, h in ctx.state["suppress"]], ctx.req.id)
    entry = _log_entry(ctx)
    if ctx.session.scalar(select(ErasureEntry.id).where(ErasureEntry.request_id == ctx.req.id)) is None:
        ctx.session.add(ErasureEntry(request_id=ctx.req.id, at=utcnow(), entry=entry))
        append_log(ctx.settings, ctx.runtime.keyring, entry)
    return {"suppressions_added": added}


@step("shred")
def _shred(ctx: StepContext) -> dict:
    return {"keys_destroyed": ctx.keys.destroy(ctx.state["keys"])}


def _delete_records(session: Session, record_ids: list[str]) -> int:
    for part in _chunks(record_ids):
        session.execute(delete(Identifier).where(Identifier.record_id.in_(part)))
        session.execute(delete(Event).where(Event.record_id.in_(part)))
        session.execute(delete(RecordVersion).where(RecordVersion.record_id.in_(part)))
        session.execute(delete(SourceRecord).where(SourceRecord.id.in_(part)))
    return len(record_ids)


def _tombstone(session: Session, profile_ids: list[str]) -> None:
    for part in _chunks(profile_ids):
        session.execute(update(Profile).where(Profile.id.in_(part)).values(
            status="deleted", golden_ct=None, provenance={}, record_count=0, updated_at=utcnow()),
            execution_options={"synchronize_session": False})


def _block_held(session: Session, held_ids: list[str]) -> None:
    for part in _chunks(held_ids):
        session.execute(update(SourceRecord).where(SourceRecord.id.in_(part)).values(
            profile_id=None, status="blocked", link_rule="legal_hold"), execution_options={"synchronize_session": False})
        session.execute(update(Event).where(Event.record_id.in_(part)).values(profile_id=None),
                        execution_options={"synchronize_session": False})


@step("purge")
def _purge(ctx: StepContext) -> dict:
    removed = _delete_records(ctx.session, ctx.state["records"])
    _block_held(ctx.session, [h["record_id"] for h in ctx.state["held"]])
    _tombstone(ctx.session, ctx.lineage)
    ctx.session.expire_all()
    return {"records_removed": removed}


@step("extensions")
def _extensions(ctx: StepContext) -> dict:
    for hook in ERASURE_HOOKS:
        hook(ctx.session, ctx.lineage)
    return {"hooks": len(ERASURE_HOOKS)}


@step("sweep")
def _sweep(ctx: StepContext) -> dict:
    """Records carrying the subject's identifiers that arrived while the
    erasure ran (before the suppression committed): erased too. A record
    holding a different valid CPF is another person sharing a contact."""
    started = datetime.fromisoformat(ctx.state["started_at"])
    cpfs = {bytes.fromhex(h) for h in ctx.state["cpfs"]}
    lineage = set(ctx.lineage)
    held = {h["record_id"] for h in ctx.state["held"]}
    by_document: set[str] = set()
    by_contact: set[str] = set()
    for kind, bi_hex in ctx.state["sweep"]:
        rows = ctx.session.execute(
            select(SourceRecord.id, SourceRecord.profile_id, Profile.created_at)
            .join(Identifier, Identifier.record_id == SourceRecord.id)
            .outerjoin(Profile, Profile.id == SourceRecord.profile_id)
            .where(Identifier.kind == kind, Identifier.blind_index == bytes.fromhex(bi_hex),
                   SourceRecord.status != "blocked")
        ).all()
        for record_id, profile_id, profile_created in rows:
            if record_id in held:
                continue
            if profile_id is None or profile_id in lineage or (profile_created and profile_created >= started):
                (by_document if kind in suppression.STRONG_KINDS else by_contact).add(record_id)
    other_person: set[str] = set()
    for part in _chunks(sorted(by_contact - by_document)):
        for record_id, bi in ctx.session.execute(select(Identifier.record_id, Identifier.blind_index).where(
                Identifier.record_id.in_(part), Identifier.kind == "cpf")):
            if bi not in cpfs:
                other_person.add(record_id)  # shares a contact, but names another person by CPF
    found = by_document | (by_contact - other_person)
    if not found:
        return {"swept": 0}
    records = list(ctx.session.scalars(select(SourceRecord).where(SourceRecord.id.in_(sorted(found)))))
    profiles = {r.profile_id for r in records if r.profile_id and r.profile_id not in lineage}
    suppression.add(ctx.session, [suppression.external_hash(r.source, r.external_key) for r in records], ctx.req.id)
    ctx.keys.destroy(sorted({r.key_id for r in records}))
    _delete_records(ctx.session, sorted(found))
    ctx.session.flush()
    emptied = []
    for pid in sorted(profiles):
        left = ctx.session.scalar(select(SourceRecord.id).where(SourceRecord.profile_id == pid).limit(1))
        if left is None:
            emptied.append(pid)
    if emptied:
        ctx.keys.destroy(list(ctx.session.scalars(select(Profile.key_id).where(Profile.id.in_(emptied)))))
        _tombstone(ctx.session, emptied)
    log.warning("dsr request=%s sweep erased %d late record(s)", ctx.req.id, len(found))
    return {"swept": len(found), "swept_profiles": emptied}


# -- after a restore ------------------------------------------------------------------------------

def reapply_erasures(runtime: Runtime, progress=None) -> dict:
    """Replay the erasure log against the database (after restoring a backup):
    keys destroyed again, rows removed again, profiles tombstoned again,
    suppression entries and the log mirror put back. Idempotent."""
    entries, refused = read_log(runtime.settings, runtime.keyring)
    totals = {"entries": len(entries), "refused_lines": refused, "keys_destroyed": 0, "records_removed": 0,
              "profiles_tombstoned": 0, "suppressions_added": 0}
    for entry in entries:
        with runtime.session() as session:
            keys = runtime.keys(session)
            suppression.erasure_fence(session)
            supp = [(k, bytes.fromhex(h)) for k, h in entry["suppress"]]
            totals["suppressions_added"] += suppression.add(session, supp, entry["request_id"])
            # Records named by id, and any record re-created under an erased (source, external id).
            externals = [(k.split(":", 1)[1], h) for k, h in supp if k.startswith("external:")]
            record_ids = set(entry["records"])
            for source, external_key in externals:
                found = session.scalar(select(SourceRecord.id).where(SourceRecord.source == source,
                                                                     SourceRecord.external_key == external_key))
                if found and found not in entry["held"]:
                    record_ids.add(found)
            present = list(session.scalars(select(SourceRecord).where(SourceRecord.id.in_(sorted(record_ids)))))
            key_ids = set(entry["keys"]) | {r.key_id for r in present}
            totals["keys_destroyed"] += keys.destroy(sorted(key_ids))
            totals["records_removed"] += _delete_records(session, [r.id for r in present])
            _block_held(session, list(entry["held"]))
            alive = list(session.scalars(select(Profile.id).where(Profile.id.in_(entry["profiles"]),
                                                                  Profile.status != "deleted")))
            _tombstone(session, alive)
            totals["profiles_tombstoned"] += len(alive)
            mirror = session.scalar(select(ErasureEntry).where(ErasureEntry.request_id == entry["request_id"]))
            if mirror is None:
                session.add(ErasureEntry(request_id=entry["request_id"], at=datetime.fromisoformat(entry["at"]),
                                         entry=entry, reapplied_at=utcnow()))
            else:
                mirror.reapplied_at = utcnow()
        if progress:
            progress(1)
    log.warning("erasure log reapplied entries=%d keys=%d records=%d", totals["entries"], totals["keys_destroyed"],
                totals["records_removed"])
    return totals


def shredded(session: Session, key_ids: list[str]) -> bool:
    """True when none of these data keys can be unwrapped any more."""
    return session.scalar(select(DataKey.id).where(DataKey.id.in_(key_ids), DataKey.wrapped.is_not(None))
                          .limit(1)) is None
