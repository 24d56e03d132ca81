"""The consent ledger: append-only, hash-chained, with the gate every
activation path asks.

Each entry carries `prev_hash` and `hash` = SHA-256 over a canonical JSON
of all its columns (sequence number and previous hash included, evidence as
ciphertext), plus an HMAC of that hash under a key derived from the
keyring's signing key. Appends are serialized on the `consent_ledger_head`
row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's single writer), and the
current state per subject × purpose (`consent_states`) is updated in the
same transaction.

The most recent event wins: greatest `occurred_at` (when the subject acted,
never later than when it was recorded), then greatest sequence number. A
replayed or late-synced old grant therefore never undoes a later revocation,
and a revocation takes effect for every activation after its commit
(LGPD Art. 8 §5).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from cdp import crypto
from cdp.crypto import Keyring
from cdp.models import Profile, SourceRecord, new_id, utcnow
from cdp.store import KeyStore
from consent import signing
from consent.models import ACTIONS, METHODS, ConsentState, ConsentSubjectKey, LedgerEntry, LedgerHead, Purpose
from consent.purposes import Registry, normalize_basis, requirement
from consent.schemas import LABEL_RE
from consent.subjects import lineage, lineage_many, survivor

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_ID = 1
ENTRY_FORMAT = 1
CHECKPOINT_FORMAT = "cdp-consent-ledger-checkpoint/1"
CLOCK_SKEW = timedelta(minutes=5)
OBJECTIONS = ("revoked", "opted_out")
_LABEL = re.compile(LABEL_RE)


class ConsentError(ValueError):
    """A consent event cannot be recorded; `field` names the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownSubject(LookupError):
    """No active profile with that id (none, or erased)."""


class LedgerError(RuntimeError):
    """The chain does not verify (so no checkpoint is signed over it)."""


# -- canonical form -------------------------------------------------------------------------

def _ts(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_entry(e) -> bytes:
    """The bytes an entry's hash covers (works on ORM objects and Core rows)."""
    return signing.canonical({
        "v": ENTRY_FORMAT,
        "seq": e.seq,
        "id": e.id,
        "prev_hash": e.prev_hash,
        "recorded_at": _ts(e.recorded_at),
        "subject_id": e.subject_id,
        "purpose": e.purpose,
        "purpose_version": e.purpose_version,
        "action": e.action,
        "legal_basis": e.legal_basis,
        "declared_basis": e.declared_basis,
        "occurred_at": _ts(e.occurred_at),
        "method": e.method,
        "channel": e.channel,
        "notice_version": e.notice_version,
        "collector": e.collector,
        "record_id": e.record_id,
        "origin_key": e.origin_key.hex() if e.origin_key is not None else None,
        "key_id": e.key_id,
        "evidence_ct": base64.b64encode(e.evidence_ct).decode() if e.evidence_ct is not None else None,
    })


def entry_hash(e) -> str:
    return hashlib.sha256(canonical_entry(e)).hexdigest()


# -- appending ---------------------------------------------------------------------------------

def _lock_head(session: Session) -> LedgerHead:
    if session.bind.dialect.name == "sqlite":
        # Take SQLite's write lock before reading the head (single writer).
        session.execute(update(LedgerHead).where(LedgerHead.id == HEAD_ID).values(seq=LedgerHead.seq))
    return session.execute(
        select(LedgerHead).where(LedgerHead.id == HEAD_ID).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _newer(occurred_at: datetime, seq: int, state) -> bool:
    return (occurred_at, seq) > (state.occurred_at, state.seq)


def _split_evidence(evidence: dict | None, channel: str | None, notice_version: str | None):
    """Short labels (channel, notice version) stay clear; everything else —
    IP, user agent, free text, any unknown key — is personal and encrypted."""
    personal = {k: v for k, v in (evidence or {}).items() if v not in (None, "", [], {})}
    if channel is None:
        channel = personal.pop("channel", None)
    if notice_version is None:
        notice_version = personal.pop("notice_version", None)
    if channel is not None and not (isinstance(channel, str) and _LABEL.match(channel)):
        personal["channel"], channel = channel, None
    if notice_version is not None and not (isinstance(notice_version, str) and _LABEL.match(notice_version)):
        personal["notice_version"], notice_version = notice_version, None
    return channel, notice_version, personal


class Appender:
    """Appends entries under one hold of the ledger lock, with one flush at
    the end (a resolution chunk appends many). Use `record()` for one event.

    The lock is taken first: on SQLite the write lock must come before the
    transaction's first read, or a concurrent append makes the upgrade fail."""

    def __init__(self, session: Session, keys: KeyStore, registry: Registry | None = None):
        self.session, self.keys = session, keys
        self.head = _lock_head(session)
        self.registry = registry or Registry.load(session)
        self.mac_key = signing.entry_mac_key(keys.keyring)
        self._states: dict[tuple[str, str], ConsentState] = {}
        self._subject_keys: dict[str, tuple[str, bytes]] = {}
        self._origins: dict[bytes, LedgerEntry] = {}
        self._key_rows: dict[str, ConsentSubjectKey | None] = {}
        self._prefetched: set[str] = set()
        self.unknown_purposes = 0  # signals skipped for a purpose the registry does not know

    def prefetch(self, subject_ids: Iterable[str]) -> None:
        """Load the states and consent keys of many subjects with a few
        queries, so appending for them costs no round trip each."""
        wanted = [s for s in set(subject_ids) if s not in self._prefetched]
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            for state in self.session.scalars(select(ConsentState).where(ConsentState.subject_id.in_(part))):
                self._states[(state.subject_id, state.purpose)] = state
            rows = {r.subject_id: r for r in self.session.scalars(
                select(ConsentSubjectKey).where(ConsentSubjectKey.subject_id.in_(part)))}
            for subject in part:
                self._key_rows[subject] = rows.get(subject)
            self.keys.preload([r.key_id for r in rows.values()])
        self._prefetched.update(wanted)

    def add(self, profile_id: str, purpose: str, action: str, *, method: str, collector: str,
            channel: str | None = None, notice_version: str | None = None, occurred_at: datetime | None = None,
            evidence: dict | None = None, declared_basis: str | None = None, record_id: str | None = None,
            origin_key: bytes | None = None, strict: bool = False,
            origin_checked: bool = False) -> tuple[LedgerEntry, bool]:
        with self.session.no_autoflush:  # the unit of work is flushed once, in flush()
            return self._add(profile_id, purpose, action, method, collector, channel, notice_version, occurred_at,
                             evidence, declared_basis, record_id, origin_key, strict, origin_checked)

    def flush(self) -> None:
        self.session.flush()

    def _add(self, profile_id, purpose, action, method, collector, channel, notice_version, occurred_at,
             evidence, declared_basis, record_id, origin_key, strict, origin_checked=False):
        session = self.session
        if action not in ACTIONS:
            raise ConsentError("action", "must be granted, revoked or opted_out")
        if method not in METHODS:
            raise ConsentError("source", f"must be one of {', '.join(METHODS)}")
        if origin_key is not None and not origin_checked:
            existing = self._origins.get(origin_key) or session.scalar(
                select(LedgerEntry).where(LedgerEntry.origin_key == origin_key))
            if existing is not None:
                return existing, False
        found = self.registry.purposes.get(purpose)
        if found is None:
            raise ConsentError("purpose", "no such purpose")
        subject = survivor(session, profile_id)
        if subject is None or subject.status != "active":
            raise UnknownSubject(profile_id)
        now = utcnow()
        occurred_at = (occurred_at or now).astimezone(timezone.utc)
        if occurred_at > now:
            if strict and occurred_at > now + CLOCK_SKEW:
                raise ConsentError("occurred_at", "is in the future")
            occurred_at = now  # a future time would outrank every later revocation
        channel, notice_version, personal = _split_evidence(evidence, channel, notice_version)
        if strict:
            if channel is None:
                raise ConsentError("evidence.channel", "is required")
            if action == "granted" and not found.active:
                raise ConsentError("purpose", "is retired: it accepts no new grants")
            if action == "granted" and found.legal_basis == "consent":
                if not notice_version:
                    raise ConsentError("evidence.notice_version", "a grant must name the notice version shown")
                if not self.registry.knows_notice(found, notice_version):
                    raise ConsentError("evidence.notice_version", "is not a notice of this purpose")
        version = self.registry.version_for(found, occurred_at, notice_version)

        entry_id = new_id()
        key_id = evidence_ct = None
        if personal:
            key_id, dek = self._subject_key(subject.id)
            evidence_ct = crypto.encrypt_json(dek, personal, "consent_ledger", entry_id, "evidence")
        head = self.head
        entry = LedgerEntry(
            seq=head.seq + 1, id=entry_id, recorded_at=now, subject_id=subject.id, purpose=found.name,
            purpose_version=version.version, action=action, legal_basis=version.snapshot["legal_basis"],
            declared_basis=declared_basis, occurred_at=occurred_at, method=method, channel=channel,
            notice_version=notice_version, collector=collector[:120], record_id=record_id, origin_key=origin_key,
            key_id=key_id, evidence_ct=evidence_ct, prev_hash=head.hash,
        )
        entry.hash = entry_hash(entry)
        entry.mac = signing.entry_mac(self.mac_key, entry.hash)
        head.seq, head.hash, head.updated_at = entry.seq, entry.hash, now
        session.add(entry)
        if origin_key is not None:
            self._origins[origin_key] = entry
        self._apply_state(entry)
        return entry, True

    def _subject_key(self, subject_id: str) -> tuple[str, bytes]:
        if subject_id in self._subject_keys:
            return self._subject_keys[subject_id]
        row = self._key_rows[subject_id] if subject_id in self._key_rows \
            else self.session.get(ConsentSubjectKey, subject_id)
        found = None
        if row is not None:
            try:
                found = row.key_id, self.keys.get(row.key_id)
            except crypto.DecryptionError:
                pass  # shredded: new evidence gets a new key; old entries keep theirs
        if found is None:
            found = self.keys.create()
            if row is None:
                self.session.add(ConsentSubjectKey(subject_id=subject_id, key_id=found[0]))
            else:
                row.key_id = found[0]
        self._subject_keys[subject_id] = found
        return found

    def _apply_state(self, entry: LedgerEntry) -> None:
        key = (entry.subject_id, entry.purpose)
        state = self._states.get(key)
        if state is None and entry.subject_id not in self._prefetched:
            state = self.session.get(ConsentState, key)
        if state is None:
            state = ConsentState(subject_id=entry.subject_id, purpose=entry.purpose, action=entry.action,
                                 purpose_version=entry.purpose_version, legal_basis=entry.legal_basis,
                                 occurred_at=entry.occurred_at, seq=entry.seq, updated_at=entry.recorded_at)
            self.session.add(state)
        elif _newer(entry.occurred_at, entry.seq, state):
            state.action, state.purpose_version, state.legal_basis = entry.action, entry.purpose_version, entry.legal_basis
            state.occurred_at, state.seq, state.updated_at = entry.occurred_at, entry.seq, entry.recorded_at
        self._states[key] = state


def record(session: Session, keys: KeyStore, profile_id: str, purpose: str, action: str, *,
           method: str, collector: str, channel: str | None = None, notice_version: str | None = None,
           occurred_at: datetime | None = None, evidence: dict | None = None,
           declared_basis: str | None = None, record_id: str | None = None, origin_key: bytes | None = None,
           strict: bool = False, registry: Registry | None = None) -> tuple[LedgerEntry, bool]:
    """Append one consent event; returns (entry, created).

    The entry is recorded under the profile that now stands for `profile_id`
    (following merges). `origin_key` makes the append idempotent: an event
    already recorded with it is returned with created=False. `strict` (API
    and console) refuses a grant of a consent purpose without a known notice
    version, a grant of a retired purpose, and a time in the future; from
    source records those are recorded as given (time clamped to now).

    Raises ConsentError (bad input, naming the field) or UnknownSubject."""
    appender = Appender(session, keys, registry)
    result = appender.add(profile_id, purpose, action, method=method, collector=collector, channel=channel,
                          notice_version=notice_version, occurred_at=occurred_at, evidence=evidence,
                          declared_basis=declared_basis, record_id=record_id, origin_key=origin_key, strict=strict)
    appender.flush()
    return result


def append(session: Session, keys: KeyStore, *, profile_id: str, purpose: str, action: str, source: str,
           collector: str | None = None, evidence: dict | None = None, legal_basis: str | None = None,
           occurred_at: datetime | None = None, notice_version: str | None = None) -> LedgerEntry:
    """For staff-driven events (the DPO console, data-subject requests):
    `source` is "console" or "dsr" (the method), `collector` who acted (a
    staff or request id, default the source). Strict: evidence needs a
    channel, and a grant of a consent purpose the notice version shown. The
    legal basis recorded is the purpose's; `legal_basis` is kept as what the
    caller declared."""
    entry, _ = record(session, keys, profile_id, purpose, action, method=source, collector=collector or source,
                      evidence=evidence, notice_version=notice_version, occurred_at=occurred_at,
                      declared_basis=normalize_basis(legal_basis), strict=True)
    return entry


def api_origin_key(keyring: Keyring, collector: str, idempotency_key: str) -> bytes:
    return keyring.keyed_hash("consent_api", collector, idempotency_key)


# -- consent signals carried by source records -------------------------------------------------

def _signal_key(keyring: Keyring, record_id: str, signal: dict) -> bytes:
    # Keyed: the signal holds personal evidence (an IP is guessable from a plain hash).
    return keyring.keyed_hash("consent_signal", record_id, signing.canonical(signal).decode())


def _recorded_origins(session: Session, origin_keys: list[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    for start in range(0, len(origin_keys), 500):
        found.update(session.scalars(select(LedgerEntry.origin_key).where(
            LedgerEntry.origin_key.in_(origin_keys[start:start + 500]))))
    return found


def ingest_signals(session: Session, keys: KeyStore, profile_id: str, record_id: str, signals: list[dict], *,
                   collector: str | None = None, appender: Appender | None = None,
                   recorded: set[bytes] | None = None) -> int:
    """Append the consent signals of one source record (as stored in its
    payload) for the profile it resolved to. Idempotent: a signal already
    appended from this record — the same version re-sent, or a later version
    still carrying it — is not appended again. Signals for purposes the
    registry does not know (by name or alias) are skipped; `cdp consent
    backfill` picks them up once the purpose exists. Returns entries added."""
    if not signals:
        return 0
    own = appender is None
    appender = appender or Appender(session, keys)
    keyed = [(_signal_key(keys.keyring, record_id, s), s) for s in signals]
    with session.no_autoflush:
        seen = recorded if recorded is not None else _recorded_origins(session, [k for k, _ in keyed])
        if collector is None:
            source = session.scalar(select(SourceRecord.source).where(SourceRecord.id == record_id))
            collector = f"source:{source}"
    added = 0
    for origin, signal in keyed:
        if origin in seen:
            continue
        seen.add(origin)
        basis = normalize_basis(signal.get("legal_basis"))
        purpose = appender.registry.find(signal.get("purpose", ""), basis)
        if purpose is None:
            appender.unknown_purposes += 1
            continue
        occurred = signal.get("occurred_at")
        occurred_at = datetime.fromisoformat(occurred) if isinstance(occurred, str) else occurred
        evidence = dict(signal.get("evidence") or {})
        if basis == "other":
            evidence["declared_legal_basis"] = signal.get("legal_basis")
        _, created = appender.add(profile_id, purpose.name, signal["status"], method="record", collector=collector,
                                  occurred_at=occurred_at, evidence=evidence, declared_basis=basis,
                                  record_id=record_id, origin_key=origin, origin_checked=True)
        added += created
    if own:  # a caller's appender reports for its whole batch (ingest_record_signals)
        if appender.unknown_purposes:
            log.warning("consent signals for unknown purposes skipped record=%s count=%d", record_id,
                        appender.unknown_purposes)
        appender.flush()
    return added


def ingest_record_signals(session: Session, keys: KeyStore, records: Iterable[SourceRecord],
                          payloads: dict[str, dict] | None = None, unknown: Counter | None = None) -> int:
    """ingest_signals() for resolved source records (called by identity
    resolution after each chunk, in its transaction, with the payloads it
    already decrypted), under one lock hold and one flush. Signals skipped
    for unknown purposes are logged once per call, or counted into `unknown`
    ("skipped", "records") for a caller that reports once for many calls."""
    carrying, payloads = [], payloads or {}
    for rec in records:
        if rec.profile_id is None:
            continue
        payload = payloads.get(rec.id)
        if payload is None:
            try:
                payload = crypto.decrypt_json(keys.get(rec.key_id), rec.payload_ct, "source_records", rec.id, "payload")
            except crypto.DecryptionError:
                continue  # an erased record carries nothing to record
        if payload.get("consents"):
            carrying.append((rec, payload["consents"]))
    if not carrying:
        return 0
    appender = Appender(session, keys)
    appender.prefetch(rec.profile_id for rec, _ in carrying)
    with session.no_autoflush:
        recorded = _recorded_origins(session, [_signal_key(keys.keyring, rec.id, sig)
                                               for rec, signals in carrying for sig in signals])
    added = 0
    for rec, signals in carrying:
        added += ingest_signals(session, keys, rec.profile_id, rec.id, signals, collector=f"source:{rec.source}",
                                appender=appender, recorded=recorded)
    if unknown is not None:
        unknown.update(skipped=appender.unknown_purposes, records=len(carrying) if appender.unknown_purposes else 0)
    elif appender.unknown_purposes:  # one line per chunk, not one per record (a backfill would flood the log)
        report_unknown_purposes(appender.unknown_purposes, len(carrying))
    appender.flush()
    return added


def report_unknown_purposes(skipped: int, records: int) -> None:
    log.warning("consent signals for unknown purposes skipped=%d of records=%d (`cdp consent backfill` "
                "records them once the purpose exists)", skipped, records)


def backfill(session: Session, keys: KeyStore, batch_size: int = 500, progress=None) -> int:
    """Replay the consent signals of every resolved record (idempotent):
    records stored before the ledger existed, or signals skipped while their
    purpose was unknown."""
    added = 0
    last = ""
    while True:
        batch = session.scalars(
            select(SourceRecord).where(SourceRecord.profile_id.is_not(None), SourceRecord.id > last)
            .order_by(SourceRecord.id).limit(batch_size)
        ).all()
        if not batch:
            return added
        keys.preload([r.key_id for r in batch])
        added += ingest_record_signals(session, keys, batch)
        keys.forget()
        last = batch[-1].id
        if progress:
            progress(len(batch))


# -- the gate -----------------------------------------------------------------------------------

def _latest_states(purpose: str, subjects: Iterable[str] | None = None):
    """Per profile id (recorded subject or any profile it was merged into,
    transitively), the most recent state for `purpose`: rows (node, action,
    purpose_version) with rn = 1."""
    s = ConsentState.__table__
    p = Profile.__table__.alias("consent_merge_parent")
    base = select(s.c.subject_id.label("node"), s.c.action, s.c.purpose_version, s.c.occurred_at, s.c.seq,
                  literal(0).label("depth")).where(s.c.purpose == purpose)
    if subjects is not None:
        base = base.where(s.c.subject_id.in_(list(subjects)))
    name = "consent_lineage_" + re.sub(r"[^a-z0-9_]", "_", purpose.lower())[:40]
    up = base.cte(name=name, recursive=True)
    up = up.union_all(
        select(p.c.merged_into, up.c.action, up.c.purpose_version, up.c.occurred_at, up.c.seq, up.c.depth + 1)
        .where(p.c.id == up.c.node, p.c.merged_into.is_not(None), up.c.depth < 64)
    )
    rn = func.row_number().over(partition_by=up.c.node, order_by=(up.c.occurred_at.desc(), up.c.seq.desc()))
    return select(up.c.node, up.c.action, up.c.purpose_version, rn.label("rn")).subquery()


def _clause(purpose: str, subjects: Iterable[str] | None = None) -> ColumnElement[bool]:
    pt = Purpose.__table__
    basis = select(pt.c.legal_basis).where(pt.c.name == purpose, pt.c.active.is_(True)).scalar_subquery()
    version = select(pt.c.version).where(pt.c.name == purpose).scalar_subquery()
    latest = _latest_states(purpose, subjects)
    granted = select(latest.c.node).where(latest.c.rn == 1, latest.c.action == "granted",
                                          latest.c.purpose_version == version)
    objected = select(latest.c.node).where(latest.c.rn == 1, latest.c.action.in_(OBJECTIONS))
    return and_(
        Profile.status == "active",
        or_(
            and_(basis == "consent", Profile.id.in_(granted)),
            and_(basis == "legitimate_interest", Profile.id.not_in(objected)),
            and_(basis.is_not(None), basis.not_in(("consent", "legitimate_interest"))),
        ),
    )


def allowed_clause(purpose: str) -> ColumnElement[bool]:
    """A WHERE clause on Profile.id: the profile may be processed for
    `purpose` now. For segment queries: `select(Profile.id).where(..., allowed_clause("email_marketing"))`.

    consent → the most recent event across the profile's lineage is a grant
    of the purpose's current version; legitimate_interest → it is not an
    opt-out or revocation; other bases → allowed; unknown or retired
    purpose → nobody. Only active profiles are ever allowed."""
    return _clause(purpose)


def allowed(session: Session, profile_ids: Iterable[str], purpose: str) -> set[str]:
    """The subset of `profile_ids` that may be processed for `purpose` now
    (same rule as allowed_clause; only the lineages of these ids are read)."""
    ids = [pid for pid in dict.fromkeys(profile_ids) if isinstance(pid, str)]
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        members = set().union(*lineage_many(session, chunk).values())
        out.update(session.scalars(select(Profile.id).where(Profile.id.in_(chunk), _clause(purpose, members))))
    return out


# -- reading -----------------------------------------------------------------------------------

def states(session: Session, profile_id: str) -> list[dict]:
    """Current state per purpose for a subject (across merged profiles):
    the deciding event and whether the gate lets the purpose through."""
    members = lineage(session, profile_id)
    rows = session.scalars(select(ConsentState).where(ConsentState.subject_id.in_(members))).all()
    latest: dict[str, ConsentState] = {}
    for row in rows:
        cur = latest.get(row.purpose)
        if cur is None or _newer(row.occurred_at, row.seq, cur):
            latest[row.purpose] = row
    out = []
    for purpose in session.scalars(select(Purpose).order_by(Purpose.name)):
        row = latest.get(purpose.name)
        if row is None and not purpose.active:
            continue
        out.append({
            "purpose": purpose.name,
            "legal_basis": purpose.legal_basis,
            "requires": requirement(purpose.legal_basis),
            "allowed": bool(allowed(session, [profile_id], purpose.name)),
            "action": row.action if row else None,
            "purpose_version": row.purpose_version if row else None,
            "current_version": purpose.version,
            "occurred_at": row.occurred_at.isoformat() if row else None,
            "seq": row.seq if row else None,
        })
    return out


def entry_dict(e: LedgerEntry) -> dict:
    return {
        "seq": e.seq, "id": e.id, "subject_id": e.subject_id, "purpose": e.purpose,
        "purpose_version": e.purpose_version, "action": e.action, "legal_basis": e.legal_basis,
        "declared_basis": e.declared_basis, "occurred_at": e.occurred_at.isoformat(),
        "recorded_at": e.recorded_at.isoformat(), "method": e.method, "channel": e.channel,
        "notice_version": e.notice_version, "collector": e.collector, "record_id": e.record_id, "hash": e.hash,
    }


def history(session: Session, keys: KeyStore, profile_id: str, purpose: str | None = None,
            include_evidence: bool = True) -> list[dict]:
    """Every event of a subject (and of the profiles merged into it), oldest
    first, with decrypted evidence — the proof of when and how consent was
    given or withdrawn. For authorized staff and the DSR access report.
    Evidence of a shredded subject reads as evidence_status "shredded"."""
    query = select(LedgerEntry).where(LedgerEntry.subject_id.in_(lineage(session, profile_id)))
    if purpose is not None:
        query = query.where(LedgerEntry.purpose == purpose)
    out = []
    for e in session.scalars(query.order_by(LedgerEntry.seq)):
        item = entry_dict(e)
        item["evidence"], item["evidence_status"] = None, "none"
        if e.evidence_ct is not None:
            if not include_evidence:
                item["evidence_status"] = "withheld"
            else:
                try:
                    item["evidence"] = crypto.decrypt_json(keys.get(e.key_id), e.evidence_ct, "consent_ledger", e.id,
                                                           "evidence")
                    item["evidence_status"] = "available"
                except crypto.DecryptionError:
                    item["evidence_status"] = "shredded"
        out.append(item)
    return out


def shred_subject(session: Session, keys: KeyStore, profile_id: str) -> int:
    """Crypto-shred the consent evidence of a subject and of every profile
    merged into it (for erasure requests). Entries stay, so the chain still
    verifies and the fact of consent stays provable; the IP, user agent and
    text become unreadable. Returns keys destroyed."""
    key_ids = list(session.scalars(
        select(ConsentSubjectKey.key_id).where(ConsentSubjectKey.subject_id.in_(lineage(session, profile_id)))
    ))
    return keys.destroy(key_ids)


def rebuild_states(session: Session, progress=None) -> int:
    """Recompute consent_states from the ledger (under the append lock)."""
    _lock_head(session)
    t = LedgerEntry.__table__
    latest: dict[tuple[str, str], tuple] = {}
    rows = session.execute(
        select(t.c.subject_id, t.c.purpose, t.c.action, t.c.purpose_version, t.c.legal_basis, t.c.occurred_at,
               t.c.seq, t.c.recorded_at).order_by(t.c.seq).execution_options(yield_per=2000)
    )
    count = 0
    for row in rows:
        cur = latest.get((row.subject_id, row.purpose))
        if cur is None or _newer(row.occurred_at, row.seq, cur):
            latest[(row.subject_id, row.purpose)] = row
        count += 1
        if progress and count % 2000 == 0:
            progress(2000)
    if progress:
        progress(count % 2000)
    session.execute(delete(ConsentState))
    values = [{"subject_id": r.subject_id, "purpose": r.purpose, "action": r.action,
               "purpose_version": r.purpose_version, "legal_basis": r.legal_basis, "occurred_at": r.occurred_at,
               "seq": r.seq, "updated_at": r.recorded_at} for r in latest.values()]
    for start in range(0, len(values), 1000):
        session.execute(insert(ConsentState), values[start:start + 1000])
    session.flush()
    return len(values)


# -- verification and checkpoints --------------------------------------------------------------

def read_checkpoint(data: dict, keyring: Keyring | None = None) -> dict:
    """The signed content of an exported checkpoint (what the signature
    covers, not the clear copy beside it). With a keyring, the checkpoint
    must also be signed by this ledger's key. Raises signing.SignatureError."""
    if not isinstance(data, dict) or not isinstance(data.get("jws"), str) or not isinstance(data.get("public_key"), str):
        raise signing.SignatureError("a checkpoint needs jws and public_key")
    if keyring is not None and data["public_key"] != signing.public_key_b64(keyring):
        raise signing.SignatureError("checkpoint was not signed by this ledger's key")
    payload = signing.verify_jws(data["jws"], data["public_key"])
    if payload.get("format") != CHECKPOINT_FORMAT or not isinstance(payload.get("seq"), int) \
            or not isinstance(payload.get("head_hash"), str):
        raise signing.SignatureError(f"not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def verify(session: Session, keyring: Keyring | None = None, checkpoint: dict | None = None,
           progress=None) -> dict:
    """Walk the chain from the first entry. Detects an edited entry (hash),
    a deleted one (sequence gap), an inserted or reordered one (previous hash,
    sequence, MAC), a truncated tail (head row), and — against a signed
    checkpoint exported earlier — a chain rewritten with recomputed hashes.
    Names the first bad sequence number.

    Without a keyring only what anyone can check is checked (hashes,
    sequence, the checkpoint's signature with its embedded public key)."""
    mac_key = signing.entry_mac_key(keyring) if keyring is not None else None
    cp = read_checkpoint(checkpoint, keyring) if checkpoint is not None else None
    result = {"ok": True, "entries": 0, "head_seq": 0, "head_hash": GENESIS, "first_bad_seq": None,
              "reason": None, "detail": None,
              "checkpoint": {"seq": cp["seq"], "head_hash": cp["head_hash"], "timestamp": cp.get("timestamp"),
                             "matched": False} if cp else None}

    def bad(seq: int, reason: str, detail: str) -> dict:
        result.update(ok=False, first_bad_seq=seq, reason=reason, detail=detail)
        return result

    t = LedgerEntry.__table__
    expected, prev = 1, GENESIS
    rows = session.execute(select(t).order_by(t.c.seq).execution_options(yield_per=1000))
    for row in rows:
        if row.seq != expected:
            if row.seq > expected:
                return bad(expected, "missing", f"entry {expected} is missing (next is {row.seq})")
            return bad(row.seq, "sequence", f"sequence number {row.seq} out of order")
        digest = entry_hash(row)
        if row.prev_hash != prev:
            return bad(row.seq, "chain_broken", "previous-hash link does not match the entry before it")
        if digest != row.hash:
            return bad(row.seq, "hash_mismatch", "entry content does not match its hash (edited)")
        if mac_key is not None and not hmac.compare_digest(signing.entry_mac(mac_key, row.hash), row.mac or ""):
            return bad(row.seq, "mac_invalid", "entry was not written by this ledger (MAC)")
        if cp is not None and row.seq == cp["seq"]:
            if row.hash != cp["head_hash"]:
                return bad(row.seq, "checkpoint_mismatch",
                           f"the chain up to {row.seq} differs from the signed checkpoint (rewritten)")
            result["checkpoint"]["matched"] = True
        prev, expected = row.hash, expected + 1
        result["entries"] += 1
        if progress and result["entries"] % 1000 == 0:
            progress(1000)
    if progress:
        progress(result["entries"] % 1000)
    last = expected - 1
    result["head_seq"], result["head_hash"] = last, prev
    if cp is not None and cp["seq"] == 0 and cp["head_hash"] == GENESIS:
        result["checkpoint"]["matched"] = True
    elif cp is not None and cp["seq"] > last:
        return bad(last + 1, "checkpoint_beyond_head",
                   f"the signed checkpoint covers {cp['seq']} entries; entries from {last + 1} are gone")
    head = session.get(LedgerHead, HEAD_ID)
    if head is None or head.seq != last or head.hash != prev:
        seq = last + 1 if head is not None and head.seq > last else last
        return bad(seq, "head_mismatch", "the head row does not match the last entry (tail removed or forged)")
    return result


def checkpoint(session: Session, keyring: Keyring) -> dict:
    """A signed statement of the verified head: keep it outside the database
    (an auditor's mailbox, a WORM bucket); `verify --checkpoint` later
    proves the chain up to it was not rewritten."""
    check = verify(session, keyring)
    if not check["ok"]:
        raise LedgerError(f"ledger does not verify at entry {check['first_bad_seq']} ({check['reason']})")
    payload = {"format": CHECKPOINT_FORMAT, "seq": check["head_seq"], "head_hash": check["head_hash"],
               "timestamp": utcnow().isoformat()}
    return {**payload, "public_key": signing.public_key_b64(keyring),
            "jws": signing.sign_jws(keyring, payload, "cdp-ledger-checkpoint")}
