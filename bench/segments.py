"""Segments and portfolios at scale: count, first page, export rate,
incremental refresh and portfolio snapshot, with the peak memory of each step.

    .venv/bin/python bench/segments.py [--profiles 100000]
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_segments \\
        .venv/bin/python bench/segments.py --profiles 1000000 [--instance DIR --reuse]

A fresh database (a temporary SQLite file unless --database-url / DATABASE_URL
names an empty database) is filled directly with N profiles (golden records
encrypted under one shared bench key, so the export decrypts for real) and N
synthetic profile_metrics rows: on PostgreSQL with COPY, on SQLite with
executemany. --reuse with the same --instance (the keyring) skips the fill
when the database already holds the profiles.

Then, through the real code: the segment count (preview), materialization,
the first page of members through the consent gate (purpose `analytics`,
legitimate interest: allowed unless the subject opted out; 1 in 256 bench
subjects has opted out) with decryption and the disclosure log, the full
export through activation.export.FileDestination (CSV, rows/s), 1,000 new
records ingested (store + resolve + metrics) plus 1,000 changed metric rows
followed by a segment refresh, and a snapshot of every portfolio (one
rule-based on the segment, one hand-assigned with 10,000 customers).

Peak memory: peak RSS of this process during each step (Linux VmHWM from
/proc/self/status, reset before each step by writing 5 to
/proc/self/clear_refs); the database server's memory is not included.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select, update  # noqa: E402
from tqdm import tqdm  # noqa: E402

CHUNK = 20_000
NEW_RECORDS = 1000
HAND_PORTFOLIO = 10_000
RULES = {"all": [{"metric": "r_score", "op": "gte", "value": 3},
                 {"any": [{"metric": "churned", "op": "eq", "value": False},
                          {"metric": "nps_class", "op": "eq", "value": "promoter"}]}]}
PROFILE_COLS = ("id", "key_id", "golden_ct", "provenance", "status", "record_count", "created_at", "updated_at")
METRIC_COLS = ("profile_id", "computed_at", "holdout_bucket", "purchase_count", "monetary_total", "last_purchase_at",
               "first_purchase_at", "recency_days", "average_order_value", "lifetime_days", "purchase_frequency",
               "churned", "nps_score", "nps_class", "complaints", "complaints_unanswered", "complaints_answered",
               "complaints_resolved", "complaint_rating_sum", "complaint_rating_count", "would_do_business_yes",
               "would_do_business_answers")


# -- memory ---------------------------------------------------------------------------------------

def _peak_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak (not per step)


@contextmanager
def step(label: str):
    """Time a step and report the peak RSS reached during it."""
    _peak_reset()
    out: dict = {}
    t = time.perf_counter()
    yield out
    elapsed = time.perf_counter() - t
    extra = f" — {out['note']}" if out.get("note") else ""
    print(f"{label}: {elapsed:.2f} s, peak RSS {_peak_mb():,.0f} MB{extra}", flush=True)
    out["elapsed"] = elapsed


# -- fill -----------------------------------------------------------------------------------------

def _rows(rng: random.Random, start: int, stop: int, key_id: str, dek: bytes, now: datetime):
    from activation.metrics import holdout_bucket
    from cdp import crypto

    for i in range(start, stop):
        pid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        golden = {"identifiers": {"email": [f"pessoa{i}@exemplo.com.br"]}, "name": {"full_name": f"Pessoa {i}"}}
        profile = (pid, key_id, crypto.encrypt_json(dek, golden, "profiles", pid, "golden"), "{}", "active", 1,
                   now, now)
        count = rng.randint(0, 12)
        last = now - timedelta(days=rng.randint(0, 720)) if count else None
        total = Decimal(rng.randint(20, 5000) * count) if count else Decimal(0)
        nps = rng.randint(0, 10) if rng.random() < 0.4 else None
        metrics = (pid, now, holdout_bucket(pid), count, total, last,
                   last - timedelta(days=rng.randint(0, 900)) if count else None,
                   (now - last).days if count else None,
                   (total / count).quantize(Decimal("0.01")) if count else None,
                   rng.randint(0, 900) if count else None, float(count) if count else None,
                   (now - last).days >= 180 if count else None,
                   nps, None if nps is None else "promoter" if nps >= 9 else "neutral" if nps >= 7 else "detractor",
                   0, 0, 0, 0, 0, 0, 0, 0)
        yield profile, metrics


def _fill(runtime, n: int) -> None:
    from activation.metrics import refresh_scores
    from activation.models import ProfileMetrics
    from cdp.models import Profile

    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    with runtime.session() as session:
        key_id, dek = runtime.keys(session).create()
    postgres = runtime.engine.dialect.name == "postgresql"
    with step(f"fill {n:,} profiles + metrics ({'COPY' if postgres else 'executemany'})"), \
            tqdm(total=n, desc="fill", unit="profile", file=sys.stderr, mininterval=2) as bar:
        for start in range(0, n, CHUNK):
            pairs = list(_rows(rng, start, min(n, start + CHUNK), key_id, dek, now))
            if postgres:
                with runtime.engine.begin() as conn:
                    raw = conn.connection.driver_connection
                    with raw.cursor() as cur:
                        for table, cols, idx in (("profiles", PROFILE_COLS, 0), ("profile_metrics", METRIC_COLS, 1)):
                            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                                for pair in pairs:
                                    copy.write_row(pair[idx])
            else:
                with runtime.session() as session:
                    session.execute(insert(Profile), [dict(zip(PROFILE_COLS, p)) | {"provenance": {}}
                                                      for p, _ in pairs])
                    session.execute(insert(ProfileMetrics), [dict(zip(METRIC_COLS, m)) for _, m in pairs])
            bar.update(len(pairs))
    with step("RFM/LTV base-wide pass (metrics.refresh_scores)"):
        with runtime.session() as session:
            refresh_scores(session)
    with step("opt-outs of analytics for 1 in 256 subjects (consent ledger appends)") as out:
        out["note"] = f"{_opt_out(runtime):,} opted out"


def _analyze(runtime) -> None:
    """Planner statistics, as autovacuum would gather them after a bulk load (the test server
    runs with autovacuum off): without them every plan works from an empty-table guess."""
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("profiles", "profile_metrics", "consent_states", "segment_members"):
            conn.exec_driver_sql(f"ANALYZE {table}")


def _opt_out(runtime) -> int:
    """Some subjects object to `analytics` (real ledger appends), so the gate has something to filter:
    those whose profile id starts with "00" (1 in 256, chosen in SQL)."""
    from cdp.models import Profile
    from consent.ledger import Appender

    with runtime.session() as session:
        ids = list(session.scalars(select(Profile.id).where(Profile.id.like("00%")).order_by(Profile.id)))
    for start in range(0, len(ids), 1000):
        with runtime.session() as session:
            appender = Appender(session, runtime.keys(session))
            appender.prefetch(ids[start:start + 1000])
            for pid in ids[start:start + 1000]:
                appender.add(pid, "analytics", "opted_out", method="api", collector="bench")
            appender.flush()
    return len(ids)


# -- steps ----------------------------------------------------------------------------------------

def _new_records(n: int) -> list[dict]:
    rng = random.Random(11)
    day = datetime.now(timezone.utc) - timedelta(days=3)
    return [{"external_id": f"BENCH-NEW-{i}",
             "identifiers": {"email": f"novo{i}.{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}@exemplo.com.br"},
             "traits": {"full_name": f"Cliente Novo {i}"},
             "events": [{"type": "purchase", "occurred_at": day.isoformat(), "amount": f"{rng.randint(50, 900)}.00"}]}
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--instance", help="Instance directory (keyring); default: a new temporary one.")
    parser.add_argument("--reuse", action="store_true", help="Skip the fill when the database has the profiles.")
    parser.add_argument("--analyze-after-refresh", action="store_true",
                        help="ANALYZE after the first materialization (for a server with autovacuum off).")
    args = parser.parse_args()

    from activation.export import FileDestination, export_segment
    from activation.access import deliver_page
    from activation.models import ProfileMetrics, Segment
    from activation.portfolios import add_members, create_portfolio, snapshot_all
    from activation.segments import create_segment, preview, refresh_members
    from cdp.console.staff import add_staff
    from cdp.disclosures import Recipient
    from cdp.ingest import ingest_batch
    from cdp.models import Profile
    from consent.purposes import seed_defaults
    from tests.conftest import make_runtime, make_settings

    instance = Path(args.instance or tempfile.mkdtemp(prefix="cdp-bench-segments-")) / "instance"
    runtime = make_runtime(make_settings(instance, args.database_url))
    print(f"database: {runtime.engine.dialect.name}, profiles: {args.profiles:,}; "
          f"peak memory = peak RSS of this process per step (VmHWM, reset per step)", flush=True)
    with runtime.session() as session:
        seed_defaults(session)
        have = session.scalar(select(func.count()).select_from(Profile))
    if not (args.reuse and have >= args.profiles):
        if have:
            raise SystemExit(f"error: the database already holds {have} profiles (use --reuse or an empty one)")
        _fill(runtime, args.profiles)
    with step("ANALYZE (planner statistics, as autovacuum would gather them)"):
        _analyze(runtime)

    with runtime.session() as session:
        for old in ("bench",):
            if session.scalar(select(Segment.id).where(Segment.name == old)) is not None:
                raise SystemExit("error: segment 'bench' exists: this database was benchmarked already")
    with step("segment count (preview: compiled SQL, count + 10 sample ids)") as out:
        with runtime.session() as session:
            out["note"] = f"{preview(session, RULES)['count']:,} members"
    with step("materialize (refresh_members, first time)") as out:
        with runtime.session() as session:
            segment = create_segment(session, "bench", RULES, holdout_pct=10)
            changes = refresh_members(session, segment)
            segment_id = segment.id
        out["note"] = f"{changes['entered']:,} entered"
    if args.analyze_after_refresh:
        with step("ANALYZE segment_members (what autovacuum does after the first refresh)"):
            _analyze(runtime)
    recipient = Recipient("api_key", "bench", "bench")
    with step("first page of members (100; gate + holdout + decrypt e-mail + disclosure log)") as out:
        with runtime.session() as session:
            segment = session.get(Segment, segment_id)
            items, cursor = deliver_page(session, runtime.keys(session), segment, recipient, "analytics",
                                         ["email", "ltv"], limit=100)
        out["note"] = f"{len(items)} rows"
    path = Path(tempfile.mkdtemp(prefix="cdp-bench-export-")) / "bench.csv"
    with step("full export to FileDestination CSV (pages of 1000, gate + decrypt + disclosure log)") as out:
        dest = FileDestination({"path": str(path), "format": "csv", "fields": ["email", "ltv"]}, destination="bench")
        rows = export_segment(runtime, segment_id, "analytics", dest, batch_size=1000)
    print(f"  export throughput: {rows:,} rows in {out['elapsed']:.2f} s = {rows / out['elapsed']:,.0f} rows/s "
          f"(holdout and opted-out kept out: {changes['entered'] - rows:,}; file {path.stat().st_size / 1e6:,.1f} MB)")
    path.unlink()

    with step(f"ingest {NEW_RECORDS:,} new records (store + resolve + their metrics)") as out:
        summary = ingest_batch(runtime, "bench_loja", _new_records(NEW_RECORDS))
        out["note"] = str(summary.counts())
    with step(f"change {NEW_RECORDS:,} existing customers (a new purchase: recency 0, R score 5)") as out:
        with runtime.session() as session:
            ids = list(session.scalars(select(ProfileMetrics.profile_id).where(ProfileMetrics.purchase_count > 0)
                                       .order_by(ProfileMetrics.profile_id).limit(NEW_RECORDS)))
            session.execute(update(ProfileMetrics).where(ProfileMetrics.profile_id.in_(ids)).values(
                last_purchase_at=datetime.now(timezone.utc), recency_days=0, churned=False, r_score=5))
        out["note"] = f"{len(ids)} rows (direct UPDATE: bench profiles have no events to recompute)"
    with step("incremental segment refresh after the 2,000 new/changed records") as out:
        with runtime.session() as session:
            changes = refresh_members(session, session.get(Segment, segment_id))
        out["note"] = f"{changes['entered']:,} entered, {changes['exited']:,} exited"

    with step(f"portfolios: rule-based on the segment + hand-assigned {HAND_PORTFOLIO:,} customers (add_members)"):
        manager = add_staff(runtime, "gerente.bench@exemplo.com.br", "analyst", "senha-de-bench-123")
        with runtime.session() as session:
            create_portfolio(session, "bench-regra", manager, segment_id=segment_id)
            hand = create_portfolio(session, "bench-manual", manager)
            hand_id = hand.id
            ids = list(session.scalars(select(Profile.id).where(Profile.status == "active")
                                       .order_by(Profile.id.desc()).limit(HAND_PORTFOLIO)))
        for start in range(0, len(ids), 1000):
            with runtime.session() as session:
                from activation.portfolio_models import Portfolio

                add_members(session, session.get(Portfolio, hand_id), ids[start:start + 1000], actor="bench")
    with step("portfolio snapshot of every portfolio (one aggregate query)") as out:
        result = snapshot_all(runtime)
        with runtime.session() as session:
            from activation.portfolios import overview

            sizes = [(p["name"], p["latest_snapshot"]["size"]) for p in overview(session)]
        out["note"] = f"{result['snapshots']} snapshots; sizes {sizes}"


if __name__ == "__main__":
    main()
