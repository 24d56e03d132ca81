"""Segments at scale: count, refresh, first page and export rate.

    .venv/bin/python bench/segments.py [--profiles 100000] [--database-url postgresql://postgres@127.0.0.1:5432/DB]

A fresh database (a temporary SQLite file unless --database-url names an
empty database) is filled directly with N profiles (golden records
encrypted under one shared bench key) and N synthetic profile_metrics rows,
then a segment is previewed (count), materialized, and pulled through the
consent gate (purpose `analytics`, legitimate interest: allowed unless the
subject opted out), as the API does: first page of 100, then every page of
1000 (decrypting e-mail, logging disclosures) for the export rate.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402
from tqdm import tqdm  # noqa: E402

CHUNK = 5000
RULES = {"all": [{"metric": "r_score", "op": "gte", "value": 3},
                 {"any": [{"metric": "churned", "op": "eq", "value": False},
                          {"metric": "nps_class", "op": "eq", "value": "promoter"}]}]}


def _fill(runtime, n: int) -> None:
    from activation.metrics import holdout_bucket, refresh_scores
    from activation.models import ProfileMetrics
    from cdp import crypto
    from cdp.models import Profile

    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    with runtime.session() as session:
        key_id, dek = runtime.keys(session).create()
    bar = tqdm(total=n, desc="fill", unit="profile", file=sys.stderr)
    for start in range(0, n, CHUNK):
        profiles, metrics = [], []
        for i in range(start, min(n, start + CHUNK)):
            pid = str(uuid.UUID(int=rng.getrandbits(128)))
            golden = {"identifiers": {"email": [f"pessoa{i}@exemplo.com.br"]}, "name": {"full_name": f"Pessoa {i}"}}
            profiles.append({"id": pid, "key_id": key_id, "provenance": {}, "status": "active", "record_count": 1,
                             "golden_ct": crypto.encrypt_json(dek, golden, "profiles", pid, "golden"),
                             "created_at": now, "updated_at": now})
            count = rng.randint(0, 12)
            last = now - timedelta(days=rng.randint(0, 720)) if count else None
            total = Decimal(rng.randint(20, 5000) * count) if count else Decimal(0)
            nps = rng.randint(0, 10) if rng.random() < 0.4 else None
            metrics.append({
                "profile_id": pid, "computed_at": now, "holdout_bucket": holdout_bucket(pid),
                "purchase_count": count, "monetary_total": total, "last_purchase_at": last,
                "first_purchase_at": last - timedelta(days=rng.randint(0, 900)) if count else None,
                "recency_days": (now - last).days if count else None,
                "average_order_value": (total / count).quantize(Decimal("0.01")) if count else None,
                "lifetime_days": rng.randint(0, 900) if count else None,
                "purchase_frequency": float(count) if count else None,
                "churned": (now - last).days >= 180 if count else None,
                "nps_score": nps, "nps_class": None if nps is None else
                "promoter" if nps >= 9 else "neutral" if nps >= 7 else "detractor",
                "complaints": 0, "complaints_unanswered": 0, "complaints_answered": 0, "complaints_resolved": 0,
                "complaint_rating_sum": 0, "complaint_rating_count": 0, "would_do_business_yes": 0,
                "would_do_business_answers": 0})
        with runtime.session() as session:
            session.execute(insert(Profile), profiles)
            session.execute(insert(ProfileMetrics), metrics)
        bar.update(len(profiles))
    bar.close()
    t = time.perf_counter()
    with runtime.session() as session:
        refresh_scores(session)
    print(f"RFM/LTV base-wide pass: {time.perf_counter() - t:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    from activation.access import deliver_page
    from activation.segments import create_segment, preview, refresh_members
    from cdp.disclosures import Recipient
    from consent.purposes import seed_defaults
    from tests.conftest import make_runtime, make_settings

    tmp = tempfile.mkdtemp(prefix="cdp-bench-segments-")
    runtime = make_runtime(make_settings(Path(tmp) / "instance", args.database_url))
    print(f"database: {runtime.engine.dialect.name}, profiles: {args.profiles}")
    with runtime.session() as session:
        seed_defaults(session)
    _fill(runtime, args.profiles)

    with runtime.session() as session:
        t = time.perf_counter()
        counted = preview(session, RULES)["count"]
        print(f"preview count: {counted} members in {time.perf_counter() - t:.3f} s")
        segment = create_segment(session, "bench", RULES, holdout_pct=10)
        t = time.perf_counter()
        changes = refresh_members(session, segment)
        print(f"materialize: {changes['entered']} entered in {time.perf_counter() - t:.3f} s")
    recipient = Recipient("api_key", "bench", "bench")
    with runtime.session() as session:
        t = time.perf_counter()
        items, cursor = deliver_page(session, runtime.keys(session), segment, recipient, "analytics",
                                     ["email", "ltv"], limit=100)
        print(f"first page (100, gate + decrypt + disclosure log): {1000 * (time.perf_counter() - t):.1f} ms")
    rows, after, t = 0, None, time.perf_counter()
    while True:
        with runtime.session() as session:
            items, cursor = deliver_page(session, runtime.keys(session), segment, recipient, "analytics",
                                         ["email", "ltv"], after=after, limit=1000)
        rows += len(items)
        if cursor is None:
            break
        after = items[-1]["profile_id"]
    elapsed = time.perf_counter() - t
    print(f"export: {rows} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s "
          f"(holdout 10 % kept out: {changes['entered'] - rows})")


if __name__ == "__main__":
    main()
