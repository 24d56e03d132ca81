"""Incremental identity resolution.

Each incoming record meets only the records that share one of its strong
identifiers or blocking keys (blind-index lookups, bounded per key, never a
scan). Each pair is decided by a deterministic rule (same valid CPF, CNPJ,
exact custom id, e-mail without a name conflict, phone with a name check) or
by the Fellegi–Sunter model (identity.scoring): auto-merge above the match
threshold, a review item for a person between the thresholds. A record that
links several profiles merges them (union-find semantics); guards keep
shared family contacts apart (never two different valid CPFs in a profile)
and a person's decisions are never overridden. Every link and merge keeps
its evidence, and can be undone.
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import NamedTuple

from sqlalchemy import URL, Connection, Engine, create_engine, func, inspect, or_, select, text, update
from sqlalchemy.orm import Session, load_only
from sqlalchemy.orm.attributes import set_committed_value

from cdp import crypto
from cdp.models import (PENDING_SQL, VALID_CPF_SQL, CannotLink, Event, Identifier, IdentifierKind, MergeEvent, Profile,
                        Source, SourceRecord, new_ordered_id, utcnow)
from cdp.store import KeyStore, Runtime, among, keep_statistics_fresh, update_rows
from identity import features as features_mod
from identity import golden as golden_mod
from identity.features import Features
from identity.models import LabelledPair, MatchModel, ReviewItem
from identity.pairs import Edge, decide
from identity.scoring import Model

log = logging.getLogger(__name__)

RESOLUTION_LOCK_ID = 0x43445031  # "CDP1": serializes resolution on PostgreSQL


class Ident(NamedTuple):
    kind: str
    blind_index: bytes
    strong: bool


@dataclass
class Rec:
    """A source record as resolution needs it, read with plain queries (ORM
    objects for every record and identifier cost more than the matching)."""

    id: str
    source: str
    version: int
    key_id: str
    payload_ct: bytes
    features_ct: bytes | None
    profile_id: str | None
    link_rule: str | None
    link_details: dict | None
    observed_at: datetime
    received_at: datetime
    identifiers: list[Ident] = field(default_factory=list)


def load_records(session: Session, record_ids: list[str], pending_only: bool = True) -> list[Rec]:
    t = SourceRecord.__table__
    query = select(t.c.id, t.c.source, t.c.version, t.c.key_id, t.c.payload_ct, t.c.features_ct, t.c.profile_id,
                   t.c.link_rule, t.c.link_details, t.c.observed_at, t.c.received_at
                   ).where(among(session, t.c.id, record_ids))
    if pending_only:
        query = query.where(t.c.status == "pending")
    recs = {row.id: Rec(*row) for row in session.execute(query).all()}
    for rec in recs.values():  # the table-level select skips the UTC type decorator on SQLite
        rec.observed_at = aware(rec.observed_at)
        rec.received_at = aware(rec.received_at)
    i = Identifier.__table__
    for rid, kind, bi, strong in session.execute(
        select(i.c.record_id, i.c.kind, i.c.blind_index, i.c.strong).where(among(session, i.c.record_id, recs))
    ).all():
        recs[rid].identifiers.append(Ident(kind, bi, bool(strong)))
    # Received order, so incremental and batch resolution meet records alike.
    return sorted(recs.values(), key=lambda r: (r.received_at, r.id))


def aware(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


@dataclass
class Decision:
    record_id: str
    profile_id: str
    rule: str
    merged: list[str] = field(default_factory=list)


def decrypt_payload(keys: KeyStore, record: SourceRecord) -> dict:
    return crypto.decrypt_json(keys.get(record.key_id), record.payload_ct, "source_records", record.id, "payload")


def golden_of(keys: KeyStore, trust, survivorship: tuple[str, ...], records) -> tuple[dict, dict, dict[str, dict]]:
    """A profile's golden record and provenance from its source records (ORM
    objects or rows with id, source, key_id, payload_ct, observed_at; taken in
    id order, so the result never depends on how they were loaded), and the
    payloads it decrypted. A record whose key was destroyed (erased) adds nothing."""
    items, payloads = [], {}
    for record in sorted(records, key=lambda r: r.id):
        try:
            payload = decrypt_payload(keys, record)
        except crypto.DecryptionError:
            continue
        payloads[record.id] = payload
        items.append((golden_mod.RecordInfo(record.id, record.source, trust(record.source),
                                            aware(record.observed_at)), payload))
    golden, provenance = golden_mod.build(items, survivorship)
    return golden, provenance, payloads


def decrypt_golden(keys: KeyStore, profile: Profile) -> dict:
    if profile.golden_ct is None:
        return {"identifiers": {}}
    return crypto.decrypt_json(keys.get(profile.key_id), profile.golden_ct, "profiles", profile.id, "golden")


def _store_golden(keys: KeyStore, profile: Profile, golden: dict, provenance: dict) -> None:
    profile.golden_ct = crypto.encrypt_json(keys.get(profile.key_id), golden, "profiles", profile.id, "golden")
    profile.provenance = provenance
    profile.updated_at = utcnow()


class FeatureCache:
    """Matching features of recently seen records, in memory only, bounded
    (least recently stored out first): a record meets the same candidates
    again and again as its people reappear. Keyed by record id and version:
    its payload is only ever rewritten as a new version (cdp.ingest), and the
    version is a small column, where checking the payload itself would read
    its ciphertext. Kept as objects: packed copies (marshal, a fifth of the
    memory) were measured slower at 200k records, since every unpacked copy
    brings new strings whose hashes and comparisons are computed again.
    A large base resolves faster with a larger cache (about 1.9 KB an entry)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._items: "OrderedDict[tuple[str, int], Features]" = OrderedDict()

    def get(self, record_id: str, version: int) -> Features | None:
        return self._items.get((record_id, version))

    def put(self, record_id: str, version: int, features: Features) -> Features:
        if self.limit:
            self._items[(record_id, version)] = features
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return features

    def __len__(self) -> int:
        return len(self._items)


FEATURES = FeatureCache(100_000)  # one per process; Resolver and the rebuild's processes set its size from the settings


def features_of(keys: KeyStore, record_id: str, version: int, key_id: str, payload_ct: bytes | None,
                payload: dict | None = None, features_ct: bytes | None = None) -> Features:
    """A record's features: cached, else its stored copy, else derived from
    its payload (records stored before the copies, or by an earlier release)."""
    cached = FEATURES.get(record_id, version)
    if cached is not None:
        return cached
    f = features_mod.unseal(keys.get(key_id), record_id, features_ct)
    if f is None:
        if payload is None:
            payload = crypto.decrypt_json(keys.get(key_id), payload_ct, "source_records", record_id, "payload")
        f = features_mod.from_payload(payload)
    return FEATURES.put(record_id, version, f)


def load_features(session: Session, keys: KeyStore, record_ids: list[str],
                  versions: dict[str, int] | None = None) -> dict[str, Features]:
    """Matching features of stored records, from the in-memory cache, else
    from their stored copies, else from their payloads (500 per query). Used
    by resolution, training and batch rebuild alike. Versions are read first
    (unless the caller read them with the records' ids): a cached record's
    ciphertext need not leave the database."""
    out: dict[str, Features] = {}
    t = SourceRecord.__table__
    for start in range(0, len(record_ids), 500):
        missing = []
        part = record_ids[start:start + 500]
        if versions is None:
            known = session.execute(select(t.c.id, t.c.version).where(among(session, t.c.id, part))).all()
        else:
            known = ((rid, versions[rid]) for rid in part)
        for rid, version in known:
            cached = FEATURES.get(rid, version)
            if cached is None:
                missing.append(rid)
            else:
                out[rid] = cached
        if not missing:
            continue
        rows = session.execute(select(t.c.id, t.c.version, t.c.key_id, t.c.features_ct)
                               .where(among(session, t.c.id, missing))).all()
        keys.preload([key_id for _, _, key_id, _ in rows])
        stale = unseal_rows(keys, rows, out)
        if stale:
            for rid, version, key_id, payload_ct in session.execute(
                    select(t.c.id, t.c.version, t.c.key_id, t.c.payload_ct).where(among(session, t.c.id, stale))):
                out[rid] = features_of(keys, rid, version, key_id, payload_ct)
    return out


def unseal_rows(keys: KeyStore, rows, out: dict[str, Features]) -> list[str]:
    """Features from (id, version, key_id, features_ct) rows whose keys are
    loaded, into `out` and the cache; returns the ids with no usable copy
    (to be derived from their payloads)."""
    stale = []
    for rid, version, key_id, features_ct in rows:
        f = features_mod.unseal(keys.get(key_id), rid, features_ct)
        if f is None:
            stale.append(rid)
        else:
            out[rid] = FEATURES.put(rid, version, f)
    return stale


def _link_details(edge: Edge) -> dict:
    details = dict(edge.details)
    if edge.other:
        details["matched_record"] = edge.other
    return details


def active_model(session: Session) -> Model:
    """The latest trained model, or the default priors before any training."""
    row = session.scalar(select(MatchModel).where(MatchModel.active.is_(True)).order_by(MatchModel.id.desc()).limit(1))
    return Model.from_json(row.params) if row else Model.default(_fuzzy_kinds(session))


def _fuzzy_kinds(session: Session) -> list[str]:
    return sorted(session.scalars(select(IdentifierKind.name).where(IdentifierKind.match == "fuzzy")))


def _record_info(record: SourceRecord, trust: int) -> golden_mod.RecordInfo:
    return golden_mod.RecordInfo(record.id, record.source, trust, record.observed_at)


def matchable(ident) -> bool:
    """Whether an identifier finds candidates: a strong identifier or a blocking key."""
    return ident.strong or ident.kind.startswith("bk:")


# The same test in SQL (written out in _HOLDERS_PG too).
MATCHABLE = or_(Identifier.__table__.c.strong.is_(True), Identifier.__table__.c.kind.like("bk:%"))

# The records holding each key, at most `lim` (cap + 1) per key, resolved or
# not (a key held by more than its cap is too common, as in a batch
# rebuild): LATERAL ... LIMIT stops reading a crowded key's index entries
# there, and the covering index answers without visiting `identifiers`
# where the visibility map allows. The holders' links are then read once
# per record, not once per key they share (a candidate shares several).
# Keys and limits go as comma-separated text (hex keys): psycopg adapts a
# list element by element in Python, ~3 µs per key (measured).
_HOLDERS_PG = text("""
    WITH h AS MATERIALIZED (
        SELECT k.bi, x.record_id
        FROM (SELECT decode(u.x, 'hex') AS bi, CAST(u.n AS integer) AS lim
              FROM unnest(string_to_array(:bis, ','), string_to_array(:lims, ',')) AS u(x, n)) AS k
        CROSS JOIN LATERAL (
            SELECT i.record_id FROM identifiers i
            WHERE i.blind_index = k.bi AND (i.strong OR left(i.kind, 3) = 'bk:')
            LIMIT k.lim) AS x),
    r AS (SELECT sr.id, sr.profile_id, sr.version FROM source_records sr
          WHERE sr.id IN (SELECT record_id FROM h))
    SELECT h.bi, h.record_id, r.profile_id, r.version FROM h JOIN r ON r.id = h.record_id
""")


def holders(db: Session | Connection, caps: dict[bytes, int]) -> dict[bytes, list[tuple[str, str | None, int]]]:
    """(record id, profile id or None while unresolved, version) of the
    records holding each key, at most cap+1 per key: enough to tell a key
    that is too common, never the whole crowd (which holders come back does
    not matter: a key with more than cap holders is not used). `db`: the
    resolver's session, or a connection of its own (`Lookahead`)."""
    out: dict[bytes, list[tuple[str, str | None, int]]] = {}
    bis = list(caps)
    postgres = (db.dialect if isinstance(db, Connection) else db.get_bind().dialect).name == "postgresql"
    i, sr = Identifier.__table__, SourceRecord.__table__
    for start in range(0, len(bis), 500):
        part = bis[start:start + 500]
        if postgres:
            rows = db.execute(_HOLDERS_PG, {"bis": ",".join(bi.hex() for bi in part),
                                                 "lims": ",".join(str(caps[bi] + 1) for bi in part)}).all()
        else:  # SQLite has no LATERAL: rank the holders of each key instead
            ranked = (
                select(i.c.blind_index, i.c.record_id,
                       func.row_number().over(partition_by=i.c.blind_index, order_by=i.c.record_id).label("n"))
                .where(i.c.blind_index.in_(part), MATCHABLE)
                .subquery()
            )
            rows = db.execute(
                select(ranked.c.blind_index, sr.c.id, sr.c.profile_id, sr.c.version)
                .join(sr, sr.c.id == ranked.c.record_id)
                .where(ranked.c.n <= max(caps[bi] for bi in part) + 1)).all()
        for bi, rid, pid, version in rows:
            out.setdefault(bi, []).append((rid, pid, version))
    return out


# Keys found held by more records than their cap, with that cap, per
# database: holders only accumulate, so such a key is not looked up again by
# this process (at a million records, birth-year keys of common names are
# most of the crowd).
CROWDED: dict[str, dict[bytes, int]] = {}


def crowded_keys(database_url: str) -> dict[bytes, int]:
    known = CROWDED.setdefault(database_url, {})
    if len(known) >= 1_000_000:
        known.clear()  # bounded memory; they are found again
    return known


# A holder's stored features and its data key, for holders the feature
# cache lacks (read with the lookup, on the lookahead's connection).
_FEATURE_ROWS_PG = text("""
    SELECT sr.id, sr.version, sr.key_id, sr.features_ct, dk.kek_id, dk.wrapped
    FROM source_records sr JOIN data_keys dk ON dk.id = sr.key_id
    WHERE sr.id = ANY(string_to_array(:ids, ','))
""")

# Records a chunk is decided in parts of, so that the next part's lookups
# overlap this part's decisions (more parts: more overlap, more queries).
LOOKAHEAD_PART = 100


@lru_cache(maxsize=8)
def _lookahead_engine(url: URL) -> Engine:
    """The lookahead's connections come from a pool of their own: from the
    app's pool, a resolver holding the lock could wait for a connection held
    by requests that wait for that lock. One resolver per process holds the
    lock at a time, so one connection is enough (the overflow is a margin)."""
    return create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True)


class Lookahead:
    """The holder lookups of a chunk's next part, answered by PostgreSQL on a
    second connection while this process decides the current part. Done in
    line, the worker waited for the server on every lookup (a core idle
    either way); this way the two work at once.

    It reads committed rows only, and that is all it needs: which records
    hold a key (written at ingest, committed before their resolution is
    queued), the holders' stored links (the resolver keeps the links it made
    in this chunk in memory, and they win), and the features of holders the
    cache lacks. Other resolvers wait for this one's lock, so nothing it
    reads is changed under it. On SQLite it runs in line."""

    def __init__(self, session: Session, cached):
        engine = session.get_bind().engine  # (a session may be bound to a connection)
        self._session = session
        self._cached = cached  # (record id, version) -> whether its features are in memory already
        self._engine = _lookahead_engine(engine.url) if engine.dialect.name == "postgresql" else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lookahead") if self._engine is not None else None
        self._next: Future | None = None
        self._conn: Connection | None = None  # opened by the lookahead's thread, kept for the chunk
        self._switch = sys.getswitchinterval()
        if self._pool is not None:
            # Each reply the lookahead waits for, it must take the GIL back
            # from the deciding thread, which gives it up only after the
            # switch interval (5 ms by default: the lookahead fell behind).
            sys.setswitchinterval(0.0005)

    def submit(self, caps: dict[bytes, int]) -> None:
        if self._pool is None:
            self._next = Future()
            self._next.set_result((holders(self._session, caps), []))
        else:
            self._next = self._pool.submit(self._look_up, caps)

    def result(self) -> tuple[dict[bytes, list[tuple[str, str | None, int]]], list[tuple]]:
        """The holders of the keys last submitted, and feature rows (id,
        version, key_id, features_ct, kek_id, wrapped) of usable holders
        whose features are not in memory."""
        return self._next.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            sys.setswitchinterval(self._switch)
            if self._conn is not None:
                self._conn.close()

    def _look_up(self, caps: dict[bytes, int]):
        if self._conn is None:
            self._conn = self._engine.connect()
        found = holders(self._conn, caps)
        wanted = {rid for bi, rows in found.items() if len(rows) <= caps[bi]
                  for rid, pid, version in rows if pid is not None and not self._cached(rid, version)}
        # (Read committed: each lookup sees what committed before it.)
        rows = self._conn.execute(_FEATURE_ROWS_PG, {"ids": ",".join(wanted)}).all() if wanted else []
        return found, rows


class Resolver:
    """Resolves records chunk by chunk. Candidates are the records sharing a
    strong identifier or a blocking key with the incoming one (blind-index
    lookups, never a scan); each pair is decided by `identity.pairs.decide`.
    Within a chunk, indexes, CPF sets and golden records live in memory
    (prefetched with a handful of queries) and are written back once."""

    def __init__(self, session: Session, keys: KeyStore, settings, model: Model | None = None):
        self.session = session
        self.keys = keys
        self.settings = settings
        self.model = model or active_model(session)
        FEATURES.limit = settings.feature_cache
        self._trust = {s.name: s.trust for s in session.scalars(select(Source))}
        self._features: dict[str, Features] = {}
        self._reset_chunk()

    def _reset_chunk(self) -> None:
        self._index: dict[bytes, list[str]] = {}     # blind index -> resolved record ids holding it
        self._crowded: set[bytes] = set()            # keys shared by too many records to be useful
        self._caps: dict[bytes, int] = {}            # keys looked up (or known crowded) in this chunk -> cap
        self._any_labelled: bool | None = None       # whether any pair was ever decided by a person
        self._record_profile: dict[str, str] = {}    # record id -> profile id
        self._alias: dict[str, str] = {}             # merged profile -> surviving profile
        self._cpfs: dict[str, set[bytes]] = {}       # profile -> its valid CPF blind indexes
        self._cannot: set[tuple[str, str]] = set()
        self._goldens: dict[str, tuple[dict, dict]] = {}  # profiles created in this chunk
        self._apply: dict[str, list[tuple]] = {}           # profile -> records to fold into its golden record
        self._rebuild: set[str] = set()
        self._counted: set[str] = set()              # stored profiles whose record_count write-back sets
        self._profiles: dict[str, Profile] = {}      # includes profiles created in this chunk (not yet flushed)
        self._decided: dict[frozenset, bool] = {}    # labelled pairs: a person's word is final
        self._touched: dict[str, Rec] = {}           # records whose link changed, written in one executemany
        self._incoming: dict[str, tuple[dict, Features]] = {}  # this chunk's records: payload, features
        self._pair_decisions: dict[tuple, Edge | None] = {}    # (record, candidate, shared strong kinds) -> edge
        if len(self._features) > 100_000:
            self._features.clear()                   # bounded memory across chunks

    def trust(self, source: str) -> int:
        if source not in self._trust:
            src = self.session.get(Source, source)
            self._trust[source] = src.trust if src else 50
        return self._trust[source]

    # -- prefetch ----------------------------------------------------------
    def _keys_to_look_up(self, records: list[Rec]) -> dict[bytes, int]:
        """The keys of these records not looked up yet in this chunk and not
        known to be crowded, with their caps."""
        known = crowded_keys(self.settings.database_url)
        caps = {}
        for record in records:
            for ident in record.identifiers:
                bi = ident.blind_index
                if bi in self._caps or not matchable(ident):
                    continue
                self._caps[bi] = cap = self.settings.block_cap(ident.kind)
                if cap <= known.get(bi, -1):
                    self._crowded.add(bi)
                else:
                    caps[bi] = cap
        return caps

    def _has_features(self, record_id: str, version: int) -> bool:
        return record_id in self._features or FEATURES.get(record_id, version) is not None

    def _prefetch(self, records: list[Rec], found: dict, feature_rows: list[tuple]) -> None:
        """Take in a part's lookup: its keys' holders (a link made in this
        chunk wins over the stored one), their features, labelled pairs."""
        known = crowded_keys(self.settings.database_url)
        versions: dict[str, int] = {}
        for bi, rows in found.items():
            if len(rows) > self._caps[bi]:
                self._crowded.add(bi)  # too common: its holders are not candidates (nor loaded)
                known[bi] = self._caps[bi]
                continue
            for rid, pid, version in rows:
                # Unresolved holders meet this chunk's records once resolved;
                # this chunk's own records are indexed as they are attached.
                if pid is not None and rid not in self._touched:
                    self._index.setdefault(bi, []).append(rid)
                    self._record_profile.setdefault(rid, pid)
                    versions[rid] = version
        self._take_feature_rows(feature_rows)
        self._load_features([rid for rid in versions if rid not in self._features], versions)
        if self._any_labelled is None:
            self._any_labelled = self.session.scalar(select(LabelledPair.id).limit(1)) is not None
        if not self._any_labelled:
            return  # nobody has decided a pair yet
        ids = [r.id for r in records] + list(versions)
        lp = LabelledPair.__table__
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for a, b, same in self.session.execute(
                select(lp.c.record_a, lp.c.record_b, lp.c.is_match).where(among(self.session, lp.c.record_a, part) | among(self.session, lp.c.record_b, part))
            ).all():
                self._decided[frozenset((a, b))] = bool(same)

    def _take_feature_rows(self, rows: list[tuple]) -> None:
        """Features of holders read by the lookahead with their data keys."""
        self.keys.unwrap_rows((key_id, kek_id, wrapped) for _, _, key_id, _, kek_id, wrapped in rows)
        # Erased holders (key destroyed) have nothing to compare; a holder with
        # no usable copy is derived from its payload by load_features.
        unseal_rows(self.keys, [row[:4] for row in rows if row[5] is not None], self._features)

    def _load_likely_profiles(self, records: list[Rec]) -> None:
        """Load the profiles this chunk may join, in a few queries: each
        record's own and those its stored candidates match into. The pair
        decisions made here are kept for the records' turn; a profile only
        reachable through a record of this same chunk loads then."""
        wanted = {r.profile_id for r in records if r.profile_id}
        for r in records:
            for edge in self.edges(r, self._incoming[r.id][1]):
                if not edge.review:
                    wanted.add(self._record_profile[edge.other])
        self._load_profiles(wanted)

    def _load_features(self, record_ids: list[str], versions: dict[str, int] | None = None) -> None:
        self._features.update(load_features(self.session, self.keys, record_ids, versions))

    def _load_profiles(self, pids: set[str]) -> None:
        wanted = [p for p in pids if p not in self._cpfs]
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            # Golden records and provenance load only for the profiles a record joins.
            loaded = list(self.session.scalars(select(Profile).where(among(self.session, Profile.id, part)).options(
                load_only(Profile.id, Profile.key_id, Profile.status, Profile.created_at, Profile.record_count,
                          Profile.merged_into))))
            for profile in loaded:
                self._profiles[profile.id] = profile
            for pid in part:
                self._cpfs[pid] = set()
            # Members first, then their valid CPFs through the partial index: as
            # one join the server scanned every CPF row (its estimates of a
            # chunk's members are blind).
            owner = dict(self.session.execute(
                select(SourceRecord.id, SourceRecord.profile_id).where(among(self.session, SourceRecord.profile_id, part))
            ).all())
            members = list(owner)
            for first in range(0, len(members), 1000):
                for rid, bi in self.session.execute(
                    select(Identifier.record_id, Identifier.blind_index)
                    .where(among(self.session, Identifier.record_id, members[first:first + 1000]), text(VALID_CPF_SQL))
                ).all():
                    self._cpfs[owner[rid]].add(bi)
            for a, b in self.session.execute(
                select(CannotLink.profile_a, CannotLink.profile_b)
                .where(among(self.session, CannotLink.profile_a, part) | among(self.session, CannotLink.profile_b, part))
            ).all():
                self._cannot.add((a, b))

    def _profile(self, pid: str) -> Profile | None:
        if pid not in self._profiles:
            self._profiles[pid] = self.session.get(Profile, pid)
        return self._profiles[pid]

    def _root(self, pid: str) -> str:
        while pid in self._alias:
            pid = self._alias[pid]
        return pid

    def _cannot_link(self, a: str, b: str) -> bool:
        return tuple(sorted((a, b))) in self._cannot

    def chunk_payloads(self) -> dict[str, dict]:
        """The last chunk's decrypted payloads (so consent intake need not decrypt them again)."""
        return {rid: payload for rid, (payload, _) in self._incoming.items()}

    # -- the decision ----------------------------------------------------
    def resolve_chunk(self, records: list[SourceRecord]) -> list[Decision]:
        """Decide a chunk's records in received order, in parts whose holder
        lookups run ahead (`Lookahead`); write the chunk back at once."""
        self._reset_chunk()
        parts = [records[i:i + LOOKAHEAD_PART] for i in range(0, len(records), LOOKAHEAD_PART)]
        decisions: list[Decision] = []
        ahead = Lookahead(self.session, self._has_features)
        # No autoflush until the write-back's own flush: a profile created in
        # one part would be inserted by the next part's queries without its
        # golden record, then updated with it (two writes instead of one).
        # Nothing read meanwhile needs it stored: this chunk's links and
        # profiles live in memory and win over the stored ones.
        with self.session.no_autoflush:
            try:
                if parts:
                    ahead.submit(self._keys_to_look_up(parts[0]))
                self.keys.preload([r.key_id for r in records])
                for record in records:
                    payload = decrypt_payload(self.keys, record)
                    self._incoming[record.id] = (payload, features_of(self.keys, record.id, record.version,
                                                                           record.key_id, record.payload_ct, payload,
                                                                           record.features_ct))
                for number, part in enumerate(parts):
                    found, feature_rows = ahead.result()
                    if number + 1 < len(parts):
                        ahead.submit(self._keys_to_look_up(parts[number + 1]))
                    self._prefetch(part, found, feature_rows)
                    self._load_likely_profiles(part)
                    decisions.extend(self._resolve_one(r) for r in part)
            finally:
                ahead.close()
            self._write_back([r.id for r in records])
        return decisions

    def resolve(self, record: SourceRecord) -> Decision:
        return self.resolve_chunk([record])[0]

    def edges(self, record: SourceRecord, f: Features) -> list[Edge]:
        """Decided pairs between this record and the records it can meet."""
        shared: dict[str, set[str]] = {}
        for ident in record.identifiers:
            if ident.blind_index in self._crowded or not matchable(ident):
                continue
            rids = self._index.get(ident.blind_index, ())
            if len(rids) > self.settings.block_cap(ident.kind):
                continue
            for rid in rids:
                if rid != record.id:
                    kinds = shared.setdefault(rid, set())
                    if ident.strong:
                        kinds.add(ident.kind)
        out = []
        for rid, kinds in shared.items():
            decided = self._decided.get(frozenset((record.id, rid)))
            if decided is False:
                continue  # a person said these are different people
            other = self._features.get(rid)
            if other is None:
                continue
            key = (record.id, rid, frozenset(kinds))
            if key not in self._pair_decisions:
                self._pair_decisions[key] = decide(f, other, rid, kinds, self.model, self.settings)
            edge = self._pair_decisions[key]
            if decided is True and (edge is None or edge.review):
                edge = Edge(rid, "review_match", 0, 1.0, {"decided_by": "person"})
            if edge is not None:
                out.append(edge)
        return out

    def _resolve_one(self, record: Rec) -> Decision:
        payload, f = self._incoming[record.id]
        record_cpfs = {i.blind_index for i in record.identifiers if i.strong and i.kind == "cpf"}
        edges = self.edges(record, f)

        # The strongest edge into each profile.
        best: dict[str, Edge] = {}
        for edge in edges:
            if edge.review:
                continue
            pid = self._root(self._record_profile[edge.other])
            if pid not in best or (edge.rank, -edge.probability) < (best[pid].rank, -best[pid].probability):
                best[pid] = edge
        self._load_profiles(set(best))  # usually loaded already (_load_likely_profiles)
        matches = []
        for pid, edge in best.items():
            profile = self._profile(pid)
            if profile is not None and profile.status == "active":
                matches.append((edge.rank, -edge.probability, profile.created_at, pid, profile, edge))
        matches.sort(key=lambda m: m[:4])

        # Grow the merge set greedily, strongest first, refusing any profile
        # that would join two different valid CPFs or that a person has
        # marked as a different individual.
        chosen: list[tuple[Profile, Edge]] = []
        cpfs = set(record_cpfs)
        for *_, profile, edge in matches:
            theirs = self._cpfs.get(profile.id, set())
            if edge.rule != "same_cpf" and cpfs and theirs and not (cpfs & theirs):
                continue
            if edge.rule != "same_cpf" and len(cpfs | theirs) > max(len(cpfs), len(theirs), 1):
                continue
            if any(self._cannot_link(profile.id, p.id) for p, _ in chosen):
                continue
            chosen.append((profile, edge))
            cpfs |= theirs

        if record.profile_id is not None:
            current = self._profile(self._root(record.profile_id))
            if current is not None and current.status == "active" and all(p.id != current.id for p, _ in chosen):
                chosen.insert(0, (current, Edge("", record.link_rule or "existing", -1, 1.0,
                                                record.link_details or {})))

        if not chosen:
            profile = self._new_profile()
            self._attach(record, profile, "new_profile", {}, payload, f)
            target, first = profile, None
        else:
            target = min((p for p, _ in chosen), key=lambda p: (p.created_at, p.id))
            first = chosen[0][1]
            for profile, edge in chosen:
                if profile.id != target.id:
                    self._merge(target, profile, edge, record.id)
            if record.profile_id == target.id:
                self._rebuild.add(target.id)  # a new version of a member: values may have changed
            self._attach(record, target, first.rule, _link_details(first), payload, f)
        self._queue_reviews(record, target, edges)
        return Decision(record.id, target.id, first.rule if first else "new_profile",
                        [p.id for p, _ in chosen if p.id != target.id])

    def _queue_reviews(self, record: SourceRecord, target: Profile, edges: list[Edge]) -> None:
        for edge in edges:
            if not edge.review:
                continue
            pid = self._root(self._record_profile.get(edge.other, ""))
            if pid == target.id or self._cannot_link(pid, target.id):
                continue
            exists = self.session.scalar(select(ReviewItem.id).where(
                ReviewItem.record_id == record.id, ReviewItem.other_record_id == edge.other))
            if exists is None:
                self.session.add(ReviewItem(record_id=record.id, other_record_id=edge.other,
                                            probability=edge.probability, details=edge.details, status="pending"))

    def _new_profile(self) -> Profile:
        key_id, _ = self.keys.create()
        profile = Profile(id=new_ordered_id(), key_id=key_id, provenance={}, record_count=0, status="active",
                          created_at=utcnow())
        self.session.add(profile)
        self._profiles[profile.id] = profile
        self._cpfs[profile.id] = set()
        self._goldens[profile.id] = golden_mod.empty()
        return profile

    def _attach(self, record: Rec, profile: Profile, rule: str, details: dict, payload: dict,
                f: Features) -> None:
        if record.profile_id != profile.id:
            count = (profile.record_count or 0) + 1
            if not inspect(profile).pending:
                # Written at write-back with the golden record: one UPDATE per profile, not two.
                set_committed_value(profile, "record_count", count)
                self._counted.add(profile.id)
            else:
                profile.record_count = count
        record.profile_id = profile.id
        record.link_rule = rule
        record.link_details = details
        self._touched[record.id] = record
        self._record_profile[record.id] = profile.id
        self._features[record.id] = f
        for ident in record.identifiers:
            if matchable(ident):
                self._index.setdefault(ident.blind_index, []).append(record.id)
            if ident.strong and ident.kind == "cpf":
                self._cpfs.setdefault(profile.id, set()).add(ident.blind_index)
        if profile.id not in self._rebuild:
            # Folded into the golden record at write-back, all of a chunk's
            # records per profile at once (one read, one write per profile).
            self._apply.setdefault(profile.id, []).append((_record_info(record, self.trust(record.source)), payload))

    def merge_profiles(self, target: Profile, other: Profile, edge: Edge, via_record: str, actor: str) -> None:
        """A merge a person asked for (review queue). Refused when the two
        hold different valid CPFs: that needs a correction first."""
        self._load_profiles({target.id, other.id})
        ours, theirs = self._cpfs.get(target.id, set()), self._cpfs.get(other.id, set())
        if ours and theirs and not (ours & theirs):
            raise ValueError("the two profiles hold different valid CPFs; correct the wrong one first")
        self._merge(target, other, edge, via_record, actor)
        self.session.flush()
        self.rebuild_golden(target)

    def _flush_records(self) -> None:
        if not self._touched:
            return
        update_rows(self.session, SourceRecord.__table__, [
            {"id": r.id, "profile_id": r.profile_id, "link_rule": r.link_rule, "link_details": r.link_details,
             "status": "resolved"} for r in self._touched.values()])
        self._touched.clear()

    def _merge(self, target: Profile, other: Profile, edge: Edge, via_record: str, actor: str = "system") -> None:
        if inspect(target).pending or inspect(other).pending:
            self.session.flush()  # stored records may move onto it; its key must exist to be destroyed
        # This chunk's links live in memory until write-back and win over the stored ones.
        stored = set(self.session.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == other.id)))
        moved = ([rid for rid in stored if rid not in self._touched]
                 + [rid for rid, rec in self._touched.items() if rec.profile_id == other.id])
        for rid in moved:
            if rid in self._touched:
                self._touched[rid].profile_id = target.id
        self._repoint([rid for rid in moved if rid in stored], target.id)
        other.record_count = max(0, (other.record_count or 0) - len(moved))
        target.record_count = (target.record_count or 0) + len(moved)
        other.status = "merged"
        other.merged_into = target.id
        other.golden_ct = None
        other.provenance = {}
        self.keys.destroy([other.key_id])  # its golden copy is gone; nothing else used that key
        self._alias[other.id] = target.id
        for rid in moved:
            self._record_profile[rid] = target.id
        self._cpfs.setdefault(target.id, set()).update(self._cpfs.pop(other.id, set()))
        self._goldens.pop(other.id, None)
        self._apply.pop(other.id, None)
        self._rebuild.add(target.id)
        details = {**_link_details(edge), "via_record": via_record}
        self.session.add(MergeEvent(kind="merge", profile_id=target.id, other_profile_id=other.id,
                                    record_ids=moved, rule=edge.rule, details=details, actor=actor))
        log.info("merged profile=%s into=%s rule=%s records=%d", other.id, target.id, edge.rule, len(moved))

    def _write_back(self, record_ids: list[str]) -> None:
        todo = {pid: items for pid, items in self._apply.items() if pid not in self._rebuild}
        existing = [pid for pid in todo if pid not in self._goldens]
        p = Profile.__table__
        stored: dict[str, tuple] = {}
        for start in range(0, len(existing), 500):
            for pid, key_id, golden_ct, provenance in self.session.execute(
                select(p.c.id, p.c.key_id, p.c.golden_ct, p.c.provenance).where(among(self.session, p.c.id, existing[start:start + 500]))
            ).all():
                stored[pid] = (key_id, golden_ct, provenance)
        self.keys.preload([v[0] for v in stored.values()])
        updates = []
        for pid, items in todo.items():
            if pid in self._goldens:  # created in this chunk: the ORM object carries it
                golden, provenance = self._goldens[pid]
            else:
                key_id, golden_ct, provenance = stored[pid]
                golden = (crypto.decrypt_json(self.keys.get(key_id), golden_ct, "profiles", pid, "golden")
                          if golden_ct else {"identifiers": {}})
                golden.setdefault("identifiers", {})
                provenance = dict(provenance or {})
                provenance["identifiers"] = dict(provenance.get("identifiers", {}))
            for info, payload in items:
                golden_mod.apply_record(golden, provenance, info, payload, self.settings.survivorship)
            profile = self._profile(pid)
            if pid in self._goldens:
                _store_golden(self.keys, profile, golden, provenance)
            else:
                updates.append({"id": pid, "golden_ct": crypto.encrypt_json(self.keys.get(stored[pid][0]), golden,
                                                                           "profiles", pid, "golden"),
                                "provenance": provenance, "record_count": profile.record_count,
                                "updated_at": utcnow()})
        update_rows(self.session, p, updates)
        written = {row["id"] for row in updates}
        update_rows(self.session, p, [{"id": pid, "record_count": self._profile(pid).record_count}
                                      for pid in self._counted if pid not in written])
        self.session.flush()
        self._flush_records()
        for pid in self._rebuild:
            profile = self._profile(pid)
            if profile is not None and profile.status == "active":
                self.rebuild_golden(profile)
        # Events follow their record to its profile, in one statement per chunk.
        for start in range(0, len(record_ids), 500):
            part = record_ids[start:start + 500]
            owner = select(SourceRecord.profile_id).where(SourceRecord.id == Event.record_id).scalar_subquery()
            self.session.execute(update(Event).where(among(self.session, Event.record_id, part)).values(profile_id=owner),
                                 execution_options={"synchronize_session": False})

    def _move_records(self, record_ids: list[str], source: Profile, target: Profile) -> None:
        if not record_ids:
            return
        self._repoint(record_ids, target.id)
        source.record_count = max(0, (source.record_count or 0) - len(record_ids))
        target.record_count = (target.record_count or 0) + len(record_ids)

    def _repoint(self, record_ids: list[str], profile_id: str) -> None:
        """Stored records, and their events, now belong to this profile."""
        for start in range(0, len(record_ids), 500):
            part = record_ids[start:start + 500]
            self.session.execute(update(SourceRecord).where(SourceRecord.id.in_(part)).values(profile_id=profile_id),
                                 execution_options={"synchronize_session": "fetch"})
            self.session.execute(update(Event).where(Event.record_id.in_(part)).values(profile_id=profile_id),
                                 execution_options={"synchronize_session": False})

    def rebuild_golden(self, profile: Profile) -> None:
        self.rebuild_goldens([profile])

    def rebuild_goldens(self, profiles: list[Profile]) -> None:
        """Golden records rebuilt from their source records, the records of
        up to 500 profiles loaded per query (a batch rebuild touches thousands)."""
        for start in range(0, len(profiles), 500):
            part = {p.id: p for p in profiles[start:start + 500]}
            by_profile: dict[str, list[SourceRecord]] = {pid: [] for pid in part}
            for r in self.session.scalars(select(SourceRecord).where(SourceRecord.profile_id.in_(list(part)))):
                by_profile[r.profile_id].append(r)
            self.keys.preload([r.key_id for rs in by_profile.values() for r in rs] + [p.key_id for p in part.values()])
            for pid, records in by_profile.items():
                golden, provenance, _ = golden_of(self.keys, self.trust, self.settings.survivorship, records)
                part[pid].record_count = len(records)
                _store_golden(self.keys, part[pid], golden, provenance)

    # -- undo ------------------------------------------------------------
    def split(self, profile_id: str, record_ids: list[str], actor: str, reason: str = "manual_split") -> Profile:
        """Move records out of a profile into a new one, and remember that the
        two are different people."""
        profile = self.session.get(Profile, profile_id)
        if profile is None or profile.status != "active":
            raise LookupError("profile not found or not active")
        members = set(self.session.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == profile_id)))
        moving = [r for r in dict.fromkeys(record_ids)]
        if not moving or not set(moving) <= members:
            raise ValueError("record_ids must be records of this profile")
        if set(moving) == members:
            raise ValueError("cannot split every record out of a profile")
        new = self._new_profile()
        self.session.flush()
        self._move_records(moving, profile, new)
        self._finish_split(profile, new, moving, actor, reason, None)
        return new

    def undo_merge(self, merge_event_id: int, actor: str) -> Profile:
        event = self.session.get(MergeEvent, merge_event_id)
        if event is None or event.kind != "merge":
            raise LookupError("merge event not found")
        if event.undone_at is not None:
            raise ValueError("this merge was already undone")
        records = self.session.scalars(select(SourceRecord).where(SourceRecord.id.in_(event.record_ids))).all()
        current = {r.profile_id for r in records}
        if len(current) != 1:
            raise ValueError("the merged records have since been split apart; split them by hand")
        holder = self.session.get(Profile, current.pop())
        other = self.session.get(Profile, event.other_profile_id)
        key_id, _ = self.keys.create()
        other.key_id = key_id
        other.status = "active"
        other.merged_into = None
        self.session.flush()
        self._move_records([r.id for r in records], holder, other)
        event.undone_at = utcnow()
        self._finish_split(holder, other, [r.id for r in records], actor, "undo_merge", event.id)
        return other

    def _finish_split(self, remaining: Profile, split_off: Profile, moved: list[str], actor, reason, undone) -> None:
        self.session.flush()
        self.session.expire_all()
        self.rebuild_golden(remaining)
        self.rebuild_golden(split_off)
        a, b = sorted((remaining.id, split_off.id))
        exists = self.session.scalar(select(CannotLink.id).where(CannotLink.profile_a == a, CannotLink.profile_b == b))
        if exists is None:
            self.session.add(CannotLink(profile_a=a, profile_b=b))
        self.session.add(MergeEvent(
            kind="split", profile_id=remaining.id, other_profile_id=split_off.id, record_ids=moved, rule=reason,
            details={"undoes_merge_event": undone} if undone else {}, actor=actor,
        ))


def resolve_records(runtime: Runtime, record_ids: list[str], progress=None) -> list[Decision]:
    """Resolve stored records, in bounded transactions. Safe to run twice:
    records already resolved are skipped (rq retries, crashes)."""
    decisions: list[Decision] = []
    size = runtime.settings.resolve_batch_size
    for start in range(0, len(record_ids), size):
        chunk = record_ids[start:start + size]
        with runtime.session() as session:
            if session.bind.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RESOLUTION_LOCK_ID})
            resolver = Resolver(session, runtime.keys(session), runtime.settings)
            pending = load_records(session, chunk)
            decisions.extend(resolver.resolve_chunk(pending))
            # Their consent signals enter the ledger in this transaction, under the final
            # profile (idempotent: a signal from a record is appended once).
            from consent.ledger import ingest_record_signals

            ingest_record_signals(session, resolver.keys, pending, payloads=resolver.chunk_payloads())
        if progress:
            progress(len(chunk))
    from activation.metrics import refresh_profiles  # derived traits of the touched profiles (docs/metrics.md)

    refresh_profiles(runtime, [pid for d in decisions for pid in (d.profile_id, *d.merged)])
    keep_statistics_fresh(runtime)
    return decisions


def pending_record_ids(runtime: Runtime) -> list[str]:
    with runtime.session() as session:
        return list(session.scalars(
            select(SourceRecord.id).where(text(PENDING_SQL)).order_by(SourceRecord.received_at, SourceRecord.id)
        ))
