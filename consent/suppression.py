"""Suppression: an erased (or blocked) subject must not come back through a
re-sync, a replay or a new record from any source.

Each normalized identifier of the subject is kept only as a keyed hash
(`keyring.keyed_hash`, whose key never enters the database). Ingestion
screens every record against the list before storing it:

* a record carrying a suppressed CPF or CNPJ, or the same (source,
  external id) as an erased record, is rejected;
* a record carrying a suppressed e-mail or phone is rejected unless it also
  carries a valid CPF that is *not* suppressed: families share contacts, and
  a relative with their own CPF is a different person (the same guard
  identity resolution applies).

The screen runs behind a fence: on PostgreSQL ingestion holds a shared
advisory lock and writing suppression entries takes it exclusively; on
SQLite ingestion takes the database write lock before screening. So a batch
either sees the suppression or commits before it, and then the erasure's
final sweep (which runs after the suppression commits) finds its records.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import utcnow
from cdp.store import among
from consent.dsr.models import Suppression

log = logging.getLogger(__name__)

FENCE_LOCK_ID = 0x43445032  # "CDP2": ingestion (shared) vs. suppression writes (exclusive), PostgreSQL
STRONG_KINDS = ("cpf", "cnpj")
CONTACT_KINDS = ("email", "phone")
SUPPRESSED = "suppressed"


def identifier_hash(keyring: crypto.Keyring, kind: str, value: str) -> bytes:
    return keyring.keyed_hash("suppression", kind, value)


def external_hash(source: str, external_key: bytes) -> tuple[str, bytes]:
    """(kind, hash) naming one source record by its keyed external id."""
    return f"external:{source}", external_key


def suppressible(ident: dict) -> bool:
    """Valid identifiers that name a person (not unverified values, not fuzzy custom ones)."""
    kind = ident["kind"]
    if not ident.get("valid", True):
        return False
    return kind in STRONG_KINDS + CONTACT_KINDS or (kind.startswith("custom:") and ident.get("match") == "exact")


def entries_for_payload(keyring: crypto.Keyring, payload: dict) -> set[tuple[str, bytes]]:
    return {(i["kind"], identifier_hash(keyring, i["kind"], i["value"]))
            for i in payload.get("identifiers", []) if suppressible(i)}


# -- the fence ----------------------------------------------------------------------------

def ingestion_fence(session: Session) -> None:
    """Taken by ingestion before it screens a batch; held until it commits."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": FENCE_LOCK_ID})
    else:
        # SQLite: a write statement (matching no row) takes the database write
        # lock now, so no suppression can commit between the screen and our commit.
        session.execute(update(Suppression).where(Suppression.id < 0).values(hits=Suppression.hits))


def erasure_fence(session: Session) -> None:
    """Taken by the transaction that writes suppression entries: waits for
    in-flight ingestion batches, and holds new ones until it commits."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FENCE_LOCK_ID})
    else:
        session.execute(update(Suppression).where(Suppression.id < 0).values(hits=Suppression.hits))


# -- writing ------------------------------------------------------------------------------

def add(session: Session, entries: Iterable[tuple[str, bytes]], request_id: str | None, mode: str = "erase") -> int:
    """Insert entries not present yet (idempotent: a retried step adds nothing twice)."""
    wanted = {(k, bytes(h)) for k, h in entries}
    if not wanted:
        return 0
    hashes = list({h for _, h in wanted})
    present: set[tuple[str, bytes]] = set()
    for start in range(0, len(hashes), 500):
        for row in session.scalars(select(Suppression).where(Suppression.hash.in_(hashes[start:start + 500]))):
            present.add((row.kind, bytes(row.hash)))
            if mode == "erase" and row.mode != "erase" and (row.kind, bytes(row.hash)) in wanted:
                row.mode, row.request_id = "erase", request_id  # a blocked subject erased: never lifted now
    added = 0
    for kind, digest in sorted(wanted - present):
        session.add(Suppression(kind=kind, hash=digest, mode=mode, request_id=request_id))
        added += 1
    session.flush()
    return added


def lift(session: Session, request_id: str, mode: str = "block") -> int:
    """Remove the entries a blocking request made (unblocking). Erasure entries are never lifted."""
    rows = session.scalars(select(Suppression).where(Suppression.request_id == request_id,
                                                     Suppression.mode == mode)).all()
    for row in rows:
        session.delete(row)
    return len(rows)


# -- screening ----------------------------------------------------------------------------

@dataclass
class Hit:
    suppression_id: int
    kind: str
    mode: str


def screen(session: Session, keyring: crypto.Keyring, source: str,
           items: list[tuple[int, bytes, dict]]) -> dict[int, Hit]:
    """Which of (index, external_key, normalized payload) are suppressed.

    One query for the whole batch. Hits are counted on the entry and logged
    with the entry's id, the source and the kind only."""
    if not items:
        return {}
    ingestion_fence(session)
    per_item: dict[int, set[tuple[str, bytes]]] = {}
    for index, external_key, payload in items:
        found = entries_for_payload(keyring, payload)
        found.add(external_hash(source, external_key))
        per_item[index] = found
    hashes = list({h for found in per_item.values() for _, h in found})
    known: dict[tuple[str, bytes], Suppression] = {}
    for start in range(0, len(hashes), 500):
        for row in session.scalars(select(Suppression).where(among(session, Suppression.hash, hashes[start:start + 500]))):
            known[(row.kind, bytes(row.hash))] = row
    if not known:
        return {}
    hits: dict[int, Hit] = {}
    for index, found in per_item.items():
        matched = [known[e] for e in sorted(found) if e in known]
        if not matched:
            continue
        kinds = {m.kind for m in matched}
        strong_or_record = [m for m in matched if m.kind in STRONG_KINDS or m.kind.startswith(("external:", "custom:"))]
        own_cpfs = {e for e in found if e[0] == "cpf"}
        unsuppressed_cpf = any(e not in known for e in own_cpfs)
        if strong_or_record:
            chosen = strong_or_record[0]
        elif kinds & set(CONTACT_KINDS) and not unsuppressed_cpf:
            chosen = matched[0]
        else:
            continue  # a shared contact, but the record names another person by CPF
        hits[index] = Hit(chosen.id, chosen.kind.split(":", 1)[0], chosen.mode)
    now = utcnow()
    for hit in hits.values():
        session.execute(update(Suppression).where(Suppression.id == hit.suppression_id)
                        .values(hits=Suppression.hits + 1, last_hit_at=now))
        log.warning("suppressed record rejected source=%s suppression=%d kind=%s", source, hit.suppression_id,
                    hit.kind)
    return hits


def count(session: Session) -> dict[str, int]:
    from sqlalchemy import func

    return dict(session.execute(select(Suppression.mode, func.count()).group_by(Suppression.mode)).all())
