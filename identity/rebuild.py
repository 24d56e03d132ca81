"""`cdp identity rebuild`: re-resolve every record from scratch (backfills,
a new model, new rules) in two phases.

1. Edges, in parallel (rq jobs over slices of record ids, or without rq a
   pool of local processes):
   each record is compared with the EARLIER records (received order) that
   share one of its strong identifiers or blocking keys, exactly the records
   incremental resolution would have met; decided pairs go to `rebuild_edges`.
2. Clusters, in one pass over the records in the same order, applying the
   edges with the same greedy rule and guards as incremental resolution
   (strongest first; never two different valid CPFs; a person's cannot-link
   respected) — so the clusters equal what incremental resolution produces.
   Existing profile ids are kept where a cluster still holds most of a
   profile's records (consent and history stay attached).

Memory is bounded by the slice size in phase 1 and by a few integers per
record in phase 2 (arrays; evidence is read back from `rebuild_edges` when
links are written); the write-back goes in batches of plain rows (no ORM
object per profile: a backfill creates hundreds of thousands). No personal
data leaves the database in clear. One rebuild runs at a time per database
(`exclusive`).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import time
import uuid
from array import array
from collections import Counter, defaultdict, deque
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Row, and_, bindparam, case, delete, func, insert, literal, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from cdp import crypto
from cdp.models import VALID_CPF_SQL, CannotLink, Event, Identifier, MergeEvent, Profile, SourceRecord, new_ordered_id, utcnow
from cdp.store import KeyStore, Runtime, among, insert_rows, tune_gc, update_rows
from identity.features import KEYS_VERSION, Features
from identity.models import LabelledPair, RebuildEdge, RebuildFeature, RebuildKey, ReviewItem
from identity.pairs import Edge, decide
from identity.resolve import FEATURES, MATCHABLE, Resolver, active_model, golden_of, load_features

SLICE = 1000
REBUILD_LOCK_ID = 0x72626C64  # "rbld"

log = logging.getLogger(__name__)


class RebuildBusy(RuntimeError):
    """Another rebuild of this database is running."""

    def __init__(self):
        super().__init__("another `cdp identity rebuild` is running on this database; wait for it to finish")


@contextlib.contextmanager
def exclusive(runtime: Runtime):
    """Hold the database's rebuild lock for the whole run, so two rebuilds
    never rewrite the same links at once; then clear what a crashed run left
    in the scratch tables (nothing else can be using them). The lock goes with
    the process: a PostgreSQL session advisory lock on a connection of its
    own, or an flock on a file beside the SQLite database."""
    url = runtime.engine.url
    if url.get_backend_name() == "postgresql":
        with runtime.engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": REBUILD_LOCK_ID}):
                raise RebuildBusy()
            conn.commit()
            try:
                _clear_scratch(runtime)
                yield
            finally:  # explicitly: the pooled connection (and its session's lock) outlives close()
                with contextlib.suppress(DBAPIError):  # a lost connection took the lock with it
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REBUILD_LOCK_ID})
                    conn.commit()
        return
    in_memory = url.database in (None, "", ":memory:")
    lock = open(runtime.settings.instance_path / "rebuild.lock" if in_memory
                else Path(url.database).with_suffix(".rebuild-lock"), "w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RebuildBusy() from None
        _clear_scratch(runtime)
        yield
    finally:
        lock.close()


def _clear_scratch(runtime: Runtime, finished: bool = False) -> None:
    with runtime.session() as session:
        # The runs' feature keys are shredded first: what a crash leaves is unreadable even in a backup.
        runs = list(session.scalars(select(RebuildFeature.run).distinct()))
        runtime.keys(session).destroy(runs)
        # Whole tables, no WHERE: SQLite then frees the pages at once instead of row by row.
        left = sum(session.execute(delete(table)).rowcount for table in (RebuildEdge, RebuildKey, RebuildFeature))
    if left and not finished:
        log.warning("rebuild: cleared rows=%d an interrupted rebuild left behind", left)


def ordered_ids(runtime: Runtime) -> list[str]:
    with runtime.session() as session:
        return list(session.scalars(select(SourceRecord.id).order_by(SourceRecord.received_at, SourceRecord.id)))


@contextlib.contextmanager
def _bulk_cache(session, megabytes: int):
    """On SQLite, for one bulk statement or transaction: reads through a
    memory map and a page cache of this size instead of 2 MB. Only there, so
    long-lived processes' resident memory does not fill with pages; the
    connection goes back to the pool as it came out."""
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    cache_size = session.execute(text("PRAGMA cache_size")).scalar()
    session.execute(text("PRAGMA mmap_size=1073741824"))
    session.execute(text(f"PRAGMA cache_size={-1024 * megabytes}"))
    try:
        yield
    finally:
        session.execute(text("PRAGMA mmap_size=0"))
        session.execute(text(f"PRAGMA cache_size={int(cache_size)}"))


def rank_keys(runtime: Runtime, run: str) -> int:
    """Before phase 1: each key's first cap+1 holders with their rank in
    received order (`RebuildKey`), in one statement. Returns rows written."""
    settings = runtime.settings
    i, sr = Identifier.__table__, SourceRecord.__table__
    limit = case(*((i.c.kind == kind, cap + 1) for kind, cap in settings.block_caps().items()),
                 else_=settings.max_block + 1)
    key = i.c.blind_index
    if settings.is_sqlite:
        # "+key": SQLite then reads the identifiers in table order and sorts them,
        # instead of walking the key index and fetching each row from wherever it
        # lies (a quarter less time at 197k records).
        key = UnaryExpression(key, operator=operators.custom_op("+"))
    ranked = (
        select(i.c.blind_index, i.c.record_id, i.c.kind, i.c.strong, limit.label("lim"),
               func.row_number().over(partition_by=key, order_by=(sr.c.received_at, sr.c.id)).label("n"),
               func.count().over(partition_by=key).label("holders"))
        .join(sr, sr.c.id == i.c.record_id)
        .where(MATCHABLE)
        .subquery()
    )
    # This statement joins every identifier to its record and sorts them by
    # key: read through a memory map, it takes a third less time; with 64 MB
    # of cache its sort, which spills to temporary files in runs the size of
    # the cache, another quarter less.
    with runtime.session() as session, _bulk_cache(session, 64):
        written = session.execute(insert(RebuildKey.__table__).from_select(
            ["run", "blind_index", "n", "record_id", "kind", "strong"],
            select(literal(run), ranked.c.blind_index, ranked.c.n, ranked.c.record_id, ranked.c.kind,
                   ranked.c.strong)
            .where(ranked.c.n <= ranked.c.lim, ranked.c.holders > 1))).rowcount  # a key held once makes no pair
    if not runtime.settings.is_sqlite:
        with runtime.session() as session:  # statistics of the fresh rows, for the self-join's plan
            session.execute(text("ANALYZE rebuild_keys"))
    return written


def compute_edges(runtime: Runtime, run: str, record_ids: list[str]) -> int:
    """Phase 1 for one slice of records. Idempotent per (run, slice)."""
    settings = runtime.settings
    # Reads in one transaction, the write in another, short one: on SQLite a
    # transaction that writes holds the database's write lock until it ends,
    # and parallel slices would take turns for their whole computation.
    with runtime.session() as session:
        keys = runtime.keys(session)
        run_key = keys.get(run)  # the run's own data key, for its scratch copies of features
        model = active_model(session)
        records = session.execute(select(SourceRecord.id, SourceRecord.received_at)
                                  .where(among(session, SourceRecord.id, record_ids))).all()
        # Each record's earlier holders of each of its keys: a record ranked n
        # in a key meets the n-1 ranked before it (none when it ranked beyond
        # cap+1: the key was too common when it arrived, as incremental saw it).
        a, b = RebuildKey.__table__.alias("a"), RebuildKey.__table__.alias("b")
        shared: dict[str, dict[str, set[str]]] = defaultdict(dict)
        for start in range(0, len(record_ids), 500):
            for rid, other, kind, strong in session.execute(
                select(a.c.record_id, b.c.record_id, a.c.kind, a.c.strong)
                .join(b, and_(b.c.run == a.c.run, b.c.blind_index == a.c.blind_index, b.c.n < a.c.n))
                .where(a.c.run == run, among(session, a.c.record_id, record_ids[start:start + 500]))
            ).all():  # fetched at once: a row at a time costs a Python call each
                kinds = shared[rid].setdefault(other, set())
                if strong:
                    kinds.add(kind)
        own = [r.id for r in records]
        earlier = sorted({rid for others in shared.values() for rid in others})
        feats = _slice_features(session, keys, run, run_key, own, earlier)
        ids = sorted(feats)
        decided = {}
        for start in range(0, len(ids), 500):
            for x, y, same in session.execute(
                select(LabelledPair.record_a, LabelledPair.record_b, LabelledPair.is_match)
                .where(among(session, LabelledPair.record_a, ids[start:start + 500]))
            ):
                decided[frozenset((x, y))] = same
        rows: list[dict] = []
        for record in records:
            for rid, kinds in shared.get(record.id, {}).items():
                label = decided.get(frozenset((record.id, rid)))
                if label is False:
                    continue
                edge = decide(feats[record.id], feats[rid], rid, kinds, model, settings)
                if label is True and (edge is None or edge.review):
                    edge = Edge(rid, "review_match", 0, 1.0, {"decided_by": "person"})
                if edge is None:
                    continue
                rows.append(dict(run=run, record_id=record.id, record_order=record.received_at, other_id=rid,
                                 rule=edge.rule, rank=edge.rank, probability=edge.probability, review=edge.review,
                                 details=edge.details))
    with runtime.session() as session:
        if records:  # a retried job's edges and features; the order range keeps this an index lookup
            session.execute(delete(RebuildEdge.__table__).where(
                RebuildEdge.run == run, RebuildEdge.record_order.between(min(r.received_at for r in records),
                                                                         max(r.received_at for r in records)),
                among(session, RebuildEdge.record_id, record_ids)))
            session.execute(delete(RebuildFeature.__table__).where(
                RebuildFeature.run == run, among(session, RebuildFeature.record_id, own)))
        insert_rows(session, RebuildEdge.__table__, rows)
        # For the later slices that compare these records.
        insert_rows(session, RebuildFeature.__table__, [
            {"run": run, "record_id": rid,
             "features_ct": crypto.encrypt_field(run_key, feats[rid].pack(), _feature_aad(rid))} for rid in own])
    return len(rows)


def _feature_aad(record_id: str) -> bytes:
    return crypto.field_aad("rebuild_features", record_id, "features")


def _slice_features(session, keys: KeyStore, run: str, run_key: bytes, own: list[str],
                    others: list[str]) -> dict[str, Features]:
    """Features of a slice's records (from their payloads) and of the earlier
    records they meet: the copies earlier slices stored where there are
    some, else from the payloads too (a slice still running, on another
    process or worker, or a job that ran out of order)."""
    out = load_features(session, keys, own)
    others = [rid for rid in others if rid not in out]
    ft = RebuildFeature.__table__
    for start in range(0, len(others), 500):
        for rid, ct in session.execute(select(ft.c.record_id, ft.c.features_ct).where(
                ft.c.run == run, among(session, ft.c.record_id, others[start:start + 500]))).all():
            f = Features.unpack(crypto.decrypt_field(run_key, ct, _feature_aad(rid)))
            if f is not None:
                out[rid] = f
    missing = [rid for rid in others if rid not in out]
    if missing:
        out.update(load_features(session, keys, missing))
    return out


def _edges_in_processes(runtime: Runtime, run: str, slices: list[list[str]], progress=None) -> None:
    """Phase 1 without rq: slices spread over local processes (one per core
    unless `CDP_REBUILD_PROCESSES` says otherwise), or in this process when
    one is enough. Each process opens its own database connections."""
    processes = min(runtime.settings.rebuild_processes or len(os.sched_getaffinity(0)), len(slices))
    if processes <= 1:
        for part in slices:
            compute_edges(runtime, run, part)
            if progress:
                progress("edges", len(part))
        return
    with _pool(runtime, processes) as pool:
        pending = {pool.submit(_edges_in_this_process, run, part): len(part) for part in slices}
        try:
            for done in as_completed(pending):
                done.result()  # a failed slice fails the rebuild before anything is rewritten
                if progress:
                    progress("edges", pending[done])
        except BaseException:
            pool.shutdown(cancel_futures=True)  # not the remaining slices first
            raise


def _pool(runtime: Runtime, processes: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child would share this process's pooled connections.
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_process, initargs=(runtime.settings, runtime.keyring))


_PROCESS_RUNTIME: Runtime | None = None


def _start_process(settings, keyring) -> None:
    global _PROCESS_RUNTIME
    tune_gc()
    _PROCESS_RUNTIME = Runtime(settings, keyring)
    FEATURES.limit = settings.feature_cache


def _edges_in_this_process(run: str, record_ids: list[str]) -> int:
    return compute_edges(_PROCESS_RUNTIME, run, record_ids)


def compute_edges_job(run: str, record_ids: list[str]) -> int:
    from cdp.jobs import _worker_runtime

    return compute_edges(_worker_runtime(), run, record_ids)


_NONE: frozenset = frozenset()


class _Components:
    """Union-find over record positions with the guards incremental
    resolution applies. Positions are dense (0, 1, 2... in received order),
    so per-record state is arrays of machine integers; CPF and cannot-link
    sets are kept only for the roots that have some (most records have
    neither): a million records cost megabytes, not a gigabyte of dicts."""

    def __init__(self):
        self.parent = array("q")
        self.first = array("q")  # per root: position of its first record (creation order)
        self.cpfs: dict[int, frozenset[bytes]] = {}
        self.tokens: dict[int, frozenset[tuple]] = {}    # cannot-link tokens (link id, side)

    def add(self, pos: int, cpfs: set[bytes], tokens: set[tuple]) -> None:
        assert pos == len(self.parent), "records are added in order"
        self.parent.append(pos)
        self.first.append(pos)
        if cpfs:
            self.cpfs[pos] = frozenset(cpfs)
        if tokens:
            self.tokens[pos] = frozenset(tokens)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def cpfs_of(self, root: int) -> frozenset:
        return self.cpfs.get(root, _NONE)

    def union_into(self, target: int, other: int) -> None:
        self.parent[other] = target
        self.first[target] = min(self.first[target], self.first[other])
        for sets in (self.cpfs, self.tokens):
            if other in sets:
                sets[target] = sets.get(target, _NONE) | sets.pop(other)

    def conflict(self, a: int, b: int) -> bool:
        theirs = self.tokens.get(b, _NONE)
        return any((k, 1 - side) in theirs for k, side in self.tokens.get(a, _NONE))


class _Links:
    """Per record position: the rule that linked it and the position of the
    record it matched (-1 for a new profile), as two integer arrays."""

    def __init__(self):
        self.rules: list[str] = []
        self._rule_ids: dict[str, int] = {}
        self.rule = array("H")
        self.matched = array("q")

    def append(self, rule: str, matched: int) -> None:
        if rule not in self._rule_ids:
            self._rule_ids[rule] = len(self.rules)
            self.rules.append(rule)
        self.rule.append(self._rule_ids[rule])
        self.matched.append(matched)

    def __getitem__(self, pos: int) -> tuple[str, int]:
        return self.rules[self.rule[pos]], self.matched[pos]


def cluster(runtime: Runtime, run: str, order: list[str], progress=None):
    """Phase 2: returns (each position's root, each position's link — rule and
    position of the matched record or -1 —, review pairs). Evidence stays in `rebuild_edges`
    until written: held for a million records it would not fit."""
    pos = {rid: i for i, rid in enumerate(order)}
    comps = _Components()
    link = _Links()
    et = RebuildEdge.__table__  # plain rows: ORM objects would cost more than the clustering
    with runtime.session() as session:
        profile_tokens: dict[str, set[tuple]] = defaultdict(set)
        for k, (a, b) in enumerate(session.execute(select(CannotLink.profile_a, CannotLink.profile_b))):
            profile_tokens[a].add((k, 0))
            profile_tokens[b].add((k, 1))
        for start in range(0, len(order), SLICE):
            part = order[start:start + SLICE]
            cpfs: dict[str, set[bytes]] = defaultdict(set)
            for rid, bi in session.execute(select(Identifier.record_id, Identifier.blind_index).where(
                    among(session, Identifier.record_id, part), text(VALID_CPF_SQL))):
                cpfs[rid].add(bi)
            current, received = {}, []
            for rid, pid, at in session.execute(select(SourceRecord.id, SourceRecord.profile_id, SourceRecord.received_at)
                                                .where(among(session, SourceRecord.id, part))):
                current[rid] = pid
                received.append(at)
            edges: dict[str, list] = defaultdict(list)
            for e in session.execute(select(et.c.record_id, et.c.other_id, et.c.rule, et.c.rank, et.c.probability,
                                            et.c.review)
                                     .where(et.c.run == run,  # the slice's order range: an index range scan
                                            et.c.record_order.between(min(received), max(received)),
                                            among(session, et.c.record_id, part))):
                edges[e.record_id].append(e)
            for rid in part:
                me = pos[rid]
                comps.add(me, cpfs.get(rid, set()), profile_tokens.get(current.get(rid), set()))
                best: dict[int, Row] = {}
                for e in edges.get(rid, ()):
                    if e.review or e.other_id not in pos:
                        continue
                    root = comps.find(pos[e.other_id])
                    if root not in best or (e.rank, -e.probability) < (best[root].rank, -best[root].probability):
                        best[root] = e
                ranked = sorted(best.items(), key=lambda kv: (kv[1].rank, -kv[1].probability, comps.first[kv[0]], kv[0]))
                chosen: list[tuple[int, Row]] = []
                acc = set(comps.cpfs_of(me))
                for root, e in ranked:
                    theirs = comps.cpfs_of(root)
                    if e.rule != "same_cpf" and acc and theirs and not (acc & theirs):
                        continue
                    if e.rule != "same_cpf" and len(acc | theirs) > max(len(acc), len(theirs), 1):
                        continue
                    if any(comps.conflict(root, r) for r, _ in chosen):
                        continue
                    chosen.append((root, e))
                    acc |= theirs
                if chosen:
                    first_edge = chosen[0][1]
                    link.append(first_edge.rule, pos[first_edge.other_id])
                    target = min((r for r, _ in chosen), key=lambda r: comps.first[r])
                    for r, _ in chosen:
                        if r != target:
                            comps.union_into(target, r)
                    comps.union_into(target, me)
                else:
                    link.append("new_profile", -1)
            if progress:
                progress(len(part))
        reviews = [tuple(row) for row in session.execute(
            select(et.c.record_id, et.c.other_id, et.c.probability, et.c.details)
            .where(et.c.run == run, et.c.review.is_(True)).order_by(et.c.record_order, et.c.record_id))]
    roots = array("q", (comps.find(i) for i in range(len(order))))
    return roots, link, reviews


class _Linked(NamedTuple):
    """A record as consent intake reads it, with the profile the rebuild gives it."""
    id: str
    source: str
    key_id: str
    payload_ct: bytes
    profile_id: str


def apply_clusters(runtime: Runtime, run: str, order: list[str], roots: array, link: _Links,
                   reviews: list, progress=None) -> dict:
    """Write the clusters in one transaction: keep each profile id where it
    still holds most of its records (everything else becomes a merge into the
    survivor), then write the profiles whose records changed, the records'
    links, the vanished profiles and the review queue. Plain rows in batches,
    so memory stays bounded however many profiles a backfill creates."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        members[root].append(i)
    stats = {"profiles": len(members), "records": len(order), "changed_records": 0}
    # One transaction rewrites most rows of a backfill (records, their index
    # entries, profiles): a bigger cache keeps its dirty pages in memory.
    with runtime.session() as session, _bulk_cache(session, 256):
        current: dict[str, str | None] = {}
        for start in range(0, len(order), 1000):
            current.update(dict(session.execute(select(SourceRecord.id, SourceRecord.profile_id)
                                                .where(among(session, SourceRecord.id, order[start:start + 1000]))).all()))
        claimed: set[str] = set()
        assignment: dict[int, str] = {}
        # Biggest clusters choose first, so a split keeps the id on its larger part.
        for root in sorted(members, key=lambda r: (-len(members[r]), r)):
            votes = Counter(current.get(order[i]) for i in members[root] if current.get(order[i]))
            pick = next((pid for pid, _ in votes.most_common() if pid not in claimed), None)
            assignment[root] = pick or new_ordered_id()
            claimed.add(assignment[root])
        touched: set[str] = set()  # profiles that gain or lose records
        for i, rid in enumerate(order):
            if current.get(rid) != assignment[roots[i]]:
                touched.update(p for p in (current.get(rid), assignment[roots[i]]) if p)
        # A kept profile that is not active (a torn state a rebuild repairs) is revived and rewritten too.
        inactive = set(session.scalars(select(Profile.id).where(Profile.status != "active"))) & claimed
        _write_profiles(runtime, session, order, members, assignment, (touched & claimed) | inactive,
                        {rid for rid in order if current.get(rid) is None},
                        (lambda n: progress("profiles", n)) if progress else None)
        keys = runtime.keys(session)
        stats["changed_records"] = _write_links(session, run, order, roots, link, assignment, current,
                                                (lambda n: progress("links", n)) if progress else None)
        _retire_vanished(session, keys, order, roots, assignment, current, touched - claimed)
        _queue_reviews(session, order, roots, assignment, reviews)
    from activation.metrics import refresh_profiles

    refresh_profiles(runtime, sorted(touched))  # metrics of profiles that gained or lost records
    return stats


PROFILE_BATCH = 500  # profiles a write-back batch builds


class _ProfileBatch(NamedTuple):
    """What one batch of golden records is built from: per profile, its id
    and its records' ids; and the records resolved for the first time."""
    profiles: list[tuple[str, list[str]]]
    first_time: frozenset[str]


class _BuiltProfiles(NamedTuple):
    """A batch's rows, ready to write: new data keys (wrapped), new and
    changed profiles, and the consent signals of first-time records
    (signals only: the rest of their payloads stays where it is)."""
    key_rows: list[dict]
    new_rows: list[dict]
    changed_rows: list[dict]
    linked: list
    consents: dict[str, dict]


def _build_profiles(runtime: Runtime, session, batch: _ProfileBatch) -> _BuiltProfiles:
    """The golden record and record count of each profile of a batch, from
    its records (each payload decrypted once). Reads only: it runs in the
    write-back's pool of processes while the parent writes earlier batches."""
    pt, sr = Profile.__table__, SourceRecord.__table__
    keys = runtime.keys(session)
    resolver = Resolver(session, keys, runtime.settings)
    existing = {row.id: row for row in session.execute(
        select(pt.c.id, pt.c.key_id, pt.c.status, pt.c.golden_ct.is_(None).label("emptied"))
        .where(among(session, pt.c.id, [pid for pid, _ in batch.profiles])))}
    records = {row.id: row for row in session.execute(
        select(sr.c.id, sr.c.source, sr.c.key_id, sr.c.payload_ct, sr.c.observed_at)
        .where(among(session, sr.c.id, [rid for _, rids in batch.profiles for rid in rids])))}
    keys.preload([r.key_id for r in records.values()] + [p.key_id for p in existing.values()])
    now = utcnow()
    built = _BuiltProfiles([], [], [], [], {})
    for pid, rids in batch.profiles:
        cluster_records = [records[rid] for rid in rids]
        golden, provenance, decrypted = golden_of(keys, resolver.trust, resolver.settings.survivorship,
                                                  cluster_records)
        for rec in cluster_records:
            if rec.id in batch.first_time and rec.id in decrypted:
                consents = decrypted[rec.id].get("consents")
                if consents:
                    built.linked.append(_Linked(rec.id, rec.source, rec.key_id, rec.payload_ct, pid))
                    built.consents[rec.id] = {"consents": consents}
        old = existing.get(pid)
        if old is None or (old.status != "active" and old.emptied):  # new, or revived after its key was shredded
            key_id, dek = keys.create(bulk=True)
        else:
            key_id, dek = old.key_id, keys.get(old.key_id)
        row = {"id": pid, "key_id": key_id, "status": "active", "merged_into": None,
               "golden_ct": crypto.encrypt_json(dek, golden, "profiles", pid, "golden"),
               "provenance": provenance, "record_count": len(rids), "updated_at": now}
        if old is None:
            built.new_rows.append(row | {"created_at": now})
        else:
            built.changed_rows.append(row)
    built.key_rows.extend(keys.take_pending())
    return built


def _build_profiles_in_this_process(batch: _ProfileBatch) -> _BuiltProfiles:
    with _PROCESS_RUNTIME.session() as session:
        return _build_profiles(_PROCESS_RUNTIME, session, batch)


def _write_profiles(runtime: Runtime, session, order: list[str], members: dict[int, list[int]],
                    assignment: dict[int, str], rebuilt: set[str], first_time: set[str], progress=None) -> None:
    """The golden record and record count of each profile whose records
    changed, built from its cluster, a batch of profiles at a time: built in
    the pool of processes (reading the last committed state, which this
    transaction has not changed for these profiles), written here in order;
    profiles new to this run are inserted whole. The consent signals of
    records resolved for the first time (a backfill) are recorded too."""
    from cdp.models import DataKey
    from consent.ledger import ingest_record_signals, report_unknown_purposes

    keys = runtime.keys(session)
    unknown = Counter()  # consent signals skipped for unknown purposes, reported once
    todo = [root for root in members if assignment[root] in rebuilt]
    batches = (_ProfileBatch([(assignment[root], [order[i] for i in members[root]]) for root in part],
                             frozenset(order[i] for root in part for i in members[root] if order[i] in first_time))
               for part in (todo[k:k + PROFILE_BATCH] for k in range(0, len(todo), PROFILE_BATCH)))
    for batch, built in _in_processes(runtime, lambda batch: _build_profiles(runtime, session, batch),
                                      _build_profiles_in_this_process, batches, -(-len(todo) // PROFILE_BATCH)):
        insert_rows(session, DataKey.__table__, built.key_rows)
        insert_rows(session, Profile.__table__, built.new_rows)
        update_rows(session, Profile.__table__, built.changed_rows)
        ingest_record_signals(session, keys, built.linked, payloads=built.consents, unknown=unknown)
        keys.forget()  # unwrapped keys of this batch only
        if progress:
            progress(sum(len(rids) for _, rids in batch.profiles))
    if unknown["skipped"]:
        report_unknown_purposes(unknown["skipped"], unknown["records"])


def _in_processes(runtime: Runtime, here, there, tasks, count: int):
    """(task, result) in order: here(task) in this process, or
    there(task) in the pool of local processes (one per core unless
    `CDP_REBUILD_PROCESSES` says otherwise) when there is more than one task;
    at most two tasks per process in flight, so finished results wait in
    memory only as long as this process takes to consume the ones before."""
    processes = min(runtime.settings.rebuild_processes or len(os.sched_getaffinity(0)), count)
    if processes <= 1:
        for task in tasks:
            yield task, here(task)
        return
    window: deque = deque()
    with _pool(runtime, processes) as pool:
        try:
            for task in tasks:
                window.append((task, pool.submit(there, task)))
                if len(window) >= 2 * processes:
                    task, future = window.popleft()
                    yield task, future.result()
            while window:
                task, future = window.popleft()
                yield task, future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _write_links(session, run: str, order: list[str], roots: array, link: _Links, assignment: dict[int, str],
                 current: dict[str, str | None], progress=None) -> int:
    """Each record's profile, rule and evidence (only where they changed, one
    executemany per 5,000 records); its events move with it. Returns records
    that changed profile."""
    sr, ev, et = SourceRecord.__table__, Event.__table__, RebuildEdge.__table__
    statement = (update(sr).where(sr.c.id == bindparam("b_id"))
                 .values(profile_id=bindparam("b_profile"), link_rule=bindparam("b_rule"),
                         link_details=bindparam("b_details"), status="resolved"))
    # A record's events carry its profile id (metrics read them by profile): they move with it.
    move_events = update(ev).where(ev.c.record_id == bindparam("b_id")).values(profile_id=bindparam("b_profile"))
    changed = 0
    for start in range(0, len(order), 5000):
        part = order[start:start + 5000]
        stored, received = {}, []
        for rid, rule, details, state, at in session.execute(
                select(sr.c.id, sr.c.link_rule, sr.c.link_details, sr.c.status, sr.c.received_at)
                .where(among(session, sr.c.id, part))):
            stored[rid] = (rule, details, state)
            received.append(at)
        evidence = {(rid, other): details for rid, other, details in session.execute(
            select(et.c.record_id, et.c.other_id, et.c.details)
            .where(et.c.run == run, et.c.record_order.between(min(received), max(received)),
                   among(session, et.c.record_id, part)))}
        rows, moved = [], []
        for i, rid in enumerate(part, start):
            pid = assignment[roots[i]]
            rule, matched = link[i]
            details = {} if matched < 0 else {**evidence[rid, order[matched]], "matched_record": order[matched]}
            if current.get(rid) != pid:
                changed += 1
                moved.append({"b_id": rid, "b_profile": pid})
            elif stored.get(rid) == (rule, details, "resolved"):
                continue  # the same link, evidence and all: nothing to write
            rows.append({"b_id": rid, "b_profile": pid, "b_rule": rule, "b_details": details})
        if rows:
            session.execute(statement, rows)
        if moved:
            session.execute(move_events, moved)
        if progress:
            progress(len(part))
    return changed


def _retire_vanished(session, keys, order: list[str], roots: array, assignment: dict[int, str],
                     current: dict[str, str | None], gone: set[str]) -> None:
    """Profiles left with no records become merges into where most of their records went."""
    survivors: dict[str, Counter] = defaultdict(Counter)
    for i, rid in enumerate(order):
        if current.get(rid) in gone:
            survivors[current[rid]][assignment[roots[i]]] += 1
    for old in sorted(gone):
        profile = session.get(Profile, old)
        if profile is None or profile.status != "active":
            continue
        into = survivors[old].most_common(1)[0][0]
        profile.status, profile.merged_into, profile.golden_ct, profile.provenance = "merged", into, None, {}
        keys.destroy([profile.key_id])
        session.add(MergeEvent(kind="merge", profile_id=into, other_profile_id=old, record_ids=[],
                               rule="rebuild", details={}, actor="rebuild"))
    session.flush()


def _queue_reviews(session, order: list[str], roots: array, assignment: dict[int, str], reviews: list) -> None:
    """Review items for the pairs between the thresholds that ended in different profiles (once each)."""
    pos = {rid: i for i, rid in enumerate(order)}
    queued: set[tuple[str, str]] = set()
    asking = sorted({rid for rid, *_ in reviews})
    for start in range(0, len(asking), 1000):
        queued.update((a, b) for a, b in session.execute(select(ReviewItem.record_id, ReviewItem.other_record_id)
                                                         .where(among(session, ReviewItem.record_id,
                                                                      asking[start:start + 1000]))))
    for rid, other, probability, details in reviews:
        if (rid, other) not in queued and assignment[roots[pos[rid]]] != assignment[roots[pos[other]]]:
            queued.add((rid, other))
            session.add(ReviewItem(record_id=rid, other_record_id=other, probability=probability,
                                   details=details, status="pending"))


def stale_ids(runtime: Runtime) -> list[str]:
    """Records whose identifier rows an older release derived (received order)."""
    with runtime.session() as session:
        return list(session.scalars(select(SourceRecord.id).where(SourceRecord.keys_version != KEYS_VERSION)
                                    .order_by(SourceRecord.received_at, SourceRecord.id)))


def refresh_keys(runtime: Runtime, record_ids: list[str], progress=None) -> int:
    """Recompute the identifier and blocking-key rows of stored records from
    their payloads (a release that changes normalization or blocking keys;
    the first step of a rebuild), a slice per transaction. Records whose
    data key was destroyed (erased) keep the rows they have. Returns records done."""
    from cdp import crypto
    from cdp.ingest import identifier_rows
    from identity.features import from_payload, seal

    done = 0
    for start in range(0, len(record_ids), SLICE):
        part = record_ids[start:start + SLICE]
        with runtime.session() as session:
            keys = runtime.keys(session)
            rows = session.execute(select(SourceRecord.id, SourceRecord.key_id, SourceRecord.payload_ct)
                                   .where(among(session, SourceRecord.id, part))).all()
            keys.preload([r.key_id for r in rows])
            fresh, refreshed = [], []
            for rid, key_id, payload_ct in rows:
                try:
                    payload = crypto.decrypt_json(keys.get(key_id), payload_ct, "source_records", rid, "payload")
                except crypto.DecryptionError:
                    continue
                features = from_payload(payload)
                fresh.extend(identifier_rows(runtime.keyring, rid, payload, features))
                refreshed.append({"id": rid, "features_ct": seal(keys.get(key_id), rid, features)})
            session.execute(delete(Identifier).where(among(session, Identifier.record_id,
                                                           [r["id"] for r in refreshed])))
            insert_rows(session, Identifier.__table__, fresh)
            update_rows(session, SourceRecord.__table__, refreshed)  # their features' copies too
            # Erased records too: nothing can be derived from them again.
            session.execute(update(SourceRecord).where(among(session, SourceRecord.id, part))
                            .values(keys_version=KEYS_VERSION), execution_options={"synchronize_session": False})
            done += len(refreshed)
        if progress:
            progress(len(part))
    return done


def rebuild(runtime: Runtime, progress=None, wait_timeout: float = 24 * 3600, rekey: bool = True) -> dict:
    """Raises RebuildBusy when another rebuild of the database is running."""
    with exclusive(runtime):
        run = str(uuid.uuid4())
        with runtime.session() as session:
            runtime.keys(session).create(key_id=run)  # the run's scratch copies of features are encrypted with it
        try:
            return _rebuild(runtime, run, progress, wait_timeout, rekey)
        finally:
            with runtime.session() as session:  # shredded even when the run fails: its copies are then unreadable
                runtime.keys(session).destroy([run])


def _rebuild(runtime: Runtime, run: str, progress, wait_timeout: float, rekey: bool) -> dict:
    order = ordered_ids(runtime)
    if rekey:  # keys first: the clusters must come from what this release would index
        refresh_keys(runtime, stale_ids(runtime), progress=(lambda n: progress("keys", n)) if progress else None)
    slices = [order[i:i + SLICE] for i in range(0, len(order), SLICE)]
    started = mark = time.perf_counter()
    phases: dict[str, float] = {}  # wall seconds per phase, in the stats (where a slow rebuild spends its time)

    def phase_done(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name], mark = round(now - mark, 2), now

    if progress:
        progress("rank", 0)  # one statement: its bar shows at 0 % while it runs
    rank_keys(runtime, run)
    if progress:
        progress("rank", len(order))
    phase_done("rank")
    if runtime.settings.redis_url:
        from rq import Retry

        from cdp.jobs import queue

        q = queue(runtime)
        jobs = [q.enqueue(compute_edges_job, run, part, retry=Retry(max=3, interval=[5, 30, 60]),
                          description=f"rebuild edges ({len(part)} records)", job_timeout=3600) for part in slices]
        done: set[str] = set()
        deadline = time.monotonic() + wait_timeout
        while len(done) < len(jobs):
            for job in jobs:
                if job.id in done:
                    continue
                status = job.get_status(refresh=True)
                if status == "finished":
                    done.add(job.id)
                    if progress:
                        progress("edges", len(job.args[1]))  # the job's slice of record ids
                elif status == "failed" and not job.retries_left:
                    raise RuntimeError(f"rebuild job {job.id} failed; see `rq info` / the failed job registry")
            if time.monotonic() > deadline:
                raise TimeoutError("rebuild: workers did not finish in time (is `cdp worker` running?)")
            time.sleep(0.2)
    else:
        _edges_in_processes(runtime, run, slices, progress)
    phase_done("edges")
    edges_seconds = time.perf_counter() - started
    roots, link, reviews = cluster(runtime, run, order,
                                   progress=(lambda n: progress("clusters", n)) if progress else None)
    phase_done("clusters")
    stats = apply_clusters(runtime, run, order, roots, link, reviews, progress)
    _clear_scratch(runtime, finished=True)  # the lock is ours: every scratch row is this run's
    phase_done("write")
    stats.update(edges_seconds=round(edges_seconds, 2), seconds=round(time.perf_counter() - started, 2),
                 phase_seconds=phases, reviews=len(reviews))
    return stats

