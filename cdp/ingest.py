"""Ingestion: validate → normalize → blind-index → encrypt → store.

(source, external id) names a source record; a keyed hash of its content
makes ingestion idempotent: the same record twice changes nothing, a changed
record becomes a new version. Stored records are then resolved into profiles
(`identity.resolve`), in-process or as an rq job that carries only ids.
"""
from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable

from marshmallow import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import Event, Identifier, IdentifierKind, RecordVersion, Source, SourceRecord, new_ordered_id, utcnow
from cdp.store import KeyStore, Runtime, among, insert_rows
from identity import normalize as norm
from identity.features import KEYS_VERSION, Features, blocking_keys, from_payload, seal
from schemas.record import flatten_errors, load_record

log = logging.getLogger(__name__)

ACCEPTED, UPDATED, DUPLICATE, REJECTED = "accepted", "updated", "duplicate", "rejected"
SUPPRESSED = "suppressed"  # the subject was erased or blocked (consent/suppression.py)


@dataclass
class RecordResult:
    index: int
    status: str
    external_id: str | None = None
    record_id: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {"index": self.index, "status": self.status}
        if self.external_id is not None:
            out["external_id"] = self.external_id
        if self.record_id:
            out["record_id"] = self.record_id
        if self.errors:
            out["errors"] = self.errors
        return out


# -- normalization -----------------------------------------------------------

def _custom_value(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).split()).casefold()


def normalize_record(data: dict, custom_kinds: dict[str, str]) -> dict:
    """Turn a validated record into the stored payload: canonical identifiers
    (with validity), display and match forms of names, ISO dates.

    Raises ValidationError naming the field when a value cannot be read."""
    errors: dict[str, list[str]] = {}
    identifiers: list[dict] = []
    ids = data.get("identifiers", {})

    def add(kind: str, raw: str, result: norm.Normalized | None, match: str = "exact"):
        if result is not None:
            identifiers.append({"kind": kind, "value": result.value, "raw": raw, "valid": result.valid, "match": match})

    for field_name, fn in (("email", norm.normalize_email), ("phone", norm.normalize_phone)):
        for raw in ids.get(field_name, []):
            try:
                add(field_name, raw, fn(raw))
            except norm.NormalizationError as exc:
                errors.setdefault(f"identifiers.{field_name}", []).append(str(exc))
    for field_name, fn in (("cpf", norm.normalize_cpf), ("cnpj", norm.normalize_cnpj)):
        for raw in ids.get(field_name, []):
            try:
                add(field_name, raw, fn(raw))
            except norm.NormalizationError as exc:
                errors.setdefault(f"identifiers.{field_name}", []).append(str(exc))
    for kind, spec in (ids.get("custom") or {}).items():
        match = spec["match"] or custom_kinds.get(kind) or "exact"
        value = _custom_value(spec["value"])
        if value:
            add(f"custom:{kind}", spec["value"], norm.Normalized(value, True), match)

    traits = dict(data.get("traits", {}))
    for key in list(traits):
        if isinstance(traits[key], str):
            traits[key] = " ".join(traits[key].split())
            if not traits[key]:
                del traits[key]
    if "birth_date" in traits:
        try:
            parsed = norm.parse_date(traits["birth_date"])
            if parsed is None:
                del traits["birth_date"]
            else:
                traits["birth_date"] = parsed.isoformat()
        except norm.NormalizationError as exc:
            digits = re.sub(r"\D", "", traits["birth_date"])
            if 6 <= len(digits) <= 8:
                # A mistyped date (31/02/1990, 19560231) is still evidence for
                # matching: kept as unverified, never shown as the birth date.
                traits["birth_date_unverified"] = digits
                del traits["birth_date"]
            else:
                errors.setdefault("traits.birth_date", []).append(str(exc))
    if "postal_code" in traits:
        cep = norm.normalize_postal_code(traits["postal_code"])
        if cep is not None and cep.valid:
            traits["postal_code"] = cep.value
    if "state" in traits:
        traits["state"] = traits["state"].upper() if len(traits["state"]) == 2 else traits["state"]
    if "full_name" not in traits and (traits.get("first_name") or traits.get("last_name")):
        traits["full_name"] = " ".join(p for p in (traits.get("first_name"), traits.get("last_name")) if p)
    name = norm.normalize_name(traits.get("full_name"))
    if errors:
        raise ValidationError(errors)

    events = []
    for ev in data.get("events", []):
        events.append({
            "type": ev["type"],
            "occurred_at": ev["occurred_at"].astimezone(timezone.utc).isoformat(),
            "id": ev.get("id"),
            "amount": str(ev["amount"]) if ev.get("amount") is not None else None,
            "currency": ev.get("currency") or ("BRL" if ev.get("amount") is not None else None),
            "attributes": ev.get("attributes") or {},
        })
    consents = []
    for c in data.get("consents", []):
        c = dict(c)
        c["occurred_at"] = (c.get("occurred_at") or data["observed_at"]).astimezone(timezone.utc).isoformat()
        consents.append(c)
    return {
        "identifiers": identifiers,
        "traits": traits,
        "name": {"display": name.display, "match": name.match} if name else None,
        "events": events,
        "consents": consents,
    }


def content_hash(keyring: crypto.Keyring, source: str, external_id: str, payload: dict) -> bytes:
    # observed_at is left out: re-exporting the same data later is not a change.
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return keyring.keyed_hash("record", source, external_id, canonical)


# -- storage -----------------------------------------------------------------

class Ingestor:
    """Stores a stream of raw records for one source, within one session."""

    def __init__(self, session: Session, keys: KeyStore, source: str, plugin: str = "api"):
        self.session = session
        self.keys = keys
        self.keyring = keys.keyring
        self.source = ensure_source(session, source, plugin)
        self.custom_kinds = {k.name: k.match for k in session.scalars(select(IdentifierKind))}
        self.changed_record_ids: list[str] = []
        self._rows: dict[str, list[dict]] = {"source_records": [], "identifiers": [], "events": []}

    def declare_custom_kind(self, name: str, match: str) -> None:
        if self.custom_kinds.get(name) != match:
            kind = self.session.get(IdentifierKind, name) or IdentifierKind(name=name)
            kind.match = match
            self.session.add(kind)
            self.custom_kinds[name] = match

    def ingest_many(self, raws: list) -> list[RecordResult]:
        """Validate all, look up existing records in one query, then store."""
        prepared: list = []
        for index, raw in enumerate(raws):
            prepared.append(self._prepare(index, raw))
        prepared = self._screen(prepared)
        keys = [p[1] for p in prepared if not isinstance(p, RecordResult)]
        existing: dict[bytes, SourceRecord] = {}
        for start in range(0, len(keys), 500):
            for rec in self.session.scalars(select(SourceRecord).where(
                SourceRecord.source == self.source.name, among(self.session, SourceRecord.external_key, keys[start:start + 500])
            )):
                existing[rec.external_key] = rec
        results = []
        with self.session.no_autoflush:
            for item in prepared:
                if isinstance(item, RecordResult):
                    results.append(item)
                else:
                    results.append(self._store(*item, existing))
        self.session.flush()
        self._write_rows()
        return results

    def _screen(self, prepared: list) -> list:
        """Reject records of erased or blocked subjects (checked behind the erasure fence)."""
        from consent.suppression import screen

        hits = screen(self.session, self.keyring, self.source.name,
                      [(p[0], p[1], p[4]) for p in prepared if not isinstance(p, RecordResult)])
        return [RecordResult(p[0], SUPPRESSED, p[2]) if not isinstance(p, RecordResult) and p[0] in hits else p
                for p in prepared]

    def _prepare(self, index: int, raw: dict):
        external_id = raw.get("external_id") if isinstance(raw, dict) else None
        external_id = str(external_id) if isinstance(external_id, (str, int)) else None
        try:
            data = load_record(raw, self.source.name)
            payload = normalize_record(data, self.custom_kinds)
        except ValidationError as exc:
            return RecordResult(index, REJECTED, external_id, errors=flatten_errors(exc.messages))
        external_id = data["external_id"]
        external_key = self.keyring.keyed_hash("external_id", self.source.name, external_id)
        return (index, external_key, external_id, data, payload)

    def _store(self, index, external_key, external_id, data, payload, existing) -> RecordResult:
        digest = content_hash(self.keyring, self.source.name, external_id, payload)
        record = existing.get(external_key)
        if record is not None and record.content_hash == digest:
            return RecordResult(index, DUPLICATE, external_id, record.id)
        if isinstance(record, _Written):
            # The same id twice in one batch with other content: write what is
            # pending, then treat it as a new version like any other.
            self._write_rows()
            record = self.session.get(SourceRecord, record.id)
        if record is None:
            record = self._insert(external_id, external_key, digest, payload, data["observed_at"])
            existing[external_key] = record
            status = ACCEPTED
        else:
            record = self._new_version(record, digest, payload, data["observed_at"])
            status = UPDATED
        self.changed_record_ids.append(record.id)
        return RecordResult(index, status, external_id, record.id)

    def ingest(self, index: int, raw: dict) -> RecordResult:
        result = self.ingest_many([raw])[0]
        result.index = index
        return result

    def _insert(self, external_id, external_key, digest, payload, observed_at) -> "_Written":
        """Queue the rows of a new record; written in bulk by _write_rows (the
        ORM unit of work costs more than everything else per record)."""
        record_id = new_ordered_id()
        key_id, dek = self.keys.create(bulk=True)
        now = utcnow()
        features_ct = self._derived_rows(record_id, None, dek, payload)
        self._rows["source_records"].append(dict(
            id=record_id,
            source=self.source.name,
            external_key=external_key,
            external_id_ct=crypto.encrypt_json(dek, external_id, "source_records", record_id, "external_id"),
            key_id=key_id,
            profile_id=None,
            version=1,
            content_hash=digest,
            payload_ct=crypto.encrypt_json(dek, payload, "source_records", record_id, "payload"),
            features_ct=features_ct,
            status="pending",
            keys_version=KEYS_VERSION,
            link_rule=None,
            link_details=None,
            observed_at=observed_at,
            received_at=now,
            updated_at=now,
        ))
        return _Written(record_id, digest)

    def _write_rows(self) -> None:
        """Insert queued rows in foreign-key order, each table in one executemany."""
        self.keys.write_pending()
        for model, name in ((SourceRecord, "source_records"), (Identifier, "identifiers"), (Event, "events")):
            insert_rows(self.session, model.__table__, self._rows[name])
            self._rows[name].clear()

    def _new_version(self, record: SourceRecord, digest, payload, observed_at) -> SourceRecord:
        dek = self.keys.get(record.key_id)
        self.session.add(RecordVersion(
            record_id=record.id,
            version=record.version,
            content_hash=record.content_hash,
            # Re-encrypted under the history row's own associated data.
            payload_ct=crypto.encrypt_json(
                dek,
                crypto.decrypt_json(dek, record.payload_ct, "source_records", record.id, "payload"),
                "record_versions", f"{record.id}:{record.version}", "payload",
            ),
            observed_at=record.observed_at,
            received_at=record.updated_at or record.received_at,
        ))
        record.version += 1
        record.content_hash = digest
        record.payload_ct = crypto.encrypt_json(dek, payload, "source_records", record.id, "payload")
        record.observed_at = observed_at
        record.updated_at = utcnow()
        record.status = "pending"
        record.keys_version = KEYS_VERSION
        self.session.execute(delete(Identifier).where(Identifier.record_id == record.id))
        self.session.execute(delete(Event).where(Event.record_id == record.id))
        record.features_ct = self._derived_rows(record.id, record.profile_id, dek, payload)
        return record

    def _derived_rows(self, record_id: str, profile_id: str | None, dek: bytes, payload: dict) -> bytes:
        """Queue the record's identifier and event rows; returns its sealed features."""
        features = from_payload(payload)
        self._rows["identifiers"].extend(identifier_rows(self.keyring, record_id, payload, features))
        for ev in payload["events"]:
            event_id = new_ordered_id()
            self._rows["events"].append(dict(
                id=event_id,
                record_id=record_id,
                profile_id=profile_id,
                type=ev["type"],
                occurred_at=datetime.fromisoformat(ev["occurred_at"]),
                amount=Decimal(ev["amount"]) if ev["amount"] is not None else None,
                currency=ev["currency"],
                attributes_ct=crypto.encrypt_json(dek, {"id": ev["id"], **ev["attributes"]}, "events", event_id,
                                                  "attributes"),
            ))
        return seal(dek, record_id, features)


@dataclass
class _Written:
    """A record queued for insertion in this batch."""

    id: str
    content_hash: bytes


def identifier_rows(keyring: crypto.Keyring, record_id: str, payload: dict,
                    features: Features | None = None) -> list[dict]:
    """The `identifiers` rows of a normalized record: its identifiers and its
    blocking keys (name sounds, birth date, CEP, ...), which find
    probabilistic candidates — both only as blind indexes."""
    rows, seen = [], set()

    def add(kind: str, value: str, strong: bool) -> None:
        bi = keyring.blind_index(kind, value)
        if (kind, bi) not in seen:
            seen.add((kind, bi))
            rows.append({"record_id": record_id, "kind": kind, "blind_index": bi, "strong": strong})

    for ident in payload["identifiers"]:
        kind = ident["kind"] if ident["valid"] else f"{ident['kind']}_unverified"
        add(kind, ident["value"], ident["valid"] and ident["match"] == "exact")
    for name, value in blocking_keys(features or from_payload(payload)):
        add(f"bk:{name}", value, False)
    return rows


def ensure_source(session: Session, name: str, plugin: str = "api", trust: int | None = None) -> Source:
    source = session.get(Source, name)
    if source is None:
        source = Source(name=name, plugin=plugin, trust=50 if trust is None else trust)
        session.add(source)
        session.flush()
    elif trust is not None and source.trust != trust:
        source.trust = trust
    return source


@dataclass
class IngestSummary:
    results: list[RecordResult]
    record_ids: list[str]
    job_ids: list[str]

    def counts(self) -> dict[str, int]:
        out = {ACCEPTED: 0, UPDATED: 0, DUPLICATE: 0, REJECTED: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1  # SUPPRESSED only when it happened
        return out


def ingest_batch(runtime: Runtime, source: str, records: Iterable[dict], plugin: str = "api",
                 custom_kinds: dict[str, str] | None = None, trust: int | None = None,
                 resolve: bool = True) -> IngestSummary:
    """Store a batch in one transaction, then resolve the stored records
    (in-process, or as rq jobs when REDIS_URL is set)."""
    from cdp import jobs

    with runtime.session() as session:
        ingestor = Ingestor(session, runtime.keys(session), source, plugin)
        if trust is not None:
            ensure_source(session, source, plugin, trust)
        for name, match in (custom_kinds or {}).items():
            ingestor.declare_custom_kind(name, match)
        results = ingestor.ingest_many(list(records))
        changed = list(ingestor.changed_record_ids)
    log.info("ingested batch source=%s counts=%s", source, IngestSummary(results, changed, []).counts())
    job_ids = jobs.submit_resolution(runtime, changed) if (resolve and changed) else []
    return IngestSummary(results, changed, job_ids)
