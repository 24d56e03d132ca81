"""What a candidate missing from a worker's feature cache costs: the same
stored records' matching features read cold, first from the sealed copies
ingest keeps beside each payload, then (copies removed) from the payloads.

    .venv/bin/python bench/feature_lookup.py [--people 3000] [--database URL]

Records come from the `cdp demo` generator, stored without resolution on
SQLite in a temporary directory unless --database names another (empty) one.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    from cdp.store import tune_gc

    tune_gc()  # as the `cdp` command does
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--database", help="an empty database (default: SQLite in a temporary directory)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from sqlalchemy import select, update

    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from cdp.models import SourceRecord
    from identity.resolve import FEATURES, load_features
    from tests.conftest import make_runtime, make_settings
    from throughput import _by_source, _Listed, _NoBar, _read_all

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = generate(tmp / "data", people=args.people, seed=5)
        runtime = make_runtime(make_settings(tmp / "instance", args.database or f"sqlite:///{tmp}/cdp.sqlite"))
        for source, records in _by_source(_read_all(ds.files)).items():
            ingest_connector(runtime, _Listed(source, records), quiet=True, bar=_NoBar(), resolve=False)
        with runtime.session() as session:
            ids = list(session.scalars(select(SourceRecord.id)))

        def measure(label: str) -> None:
            best = float("inf")
            for _ in range(args.repeat):
                FEATURES._items.clear()  # a worker that has not met these records
                with runtime.session() as session:
                    keys = runtime.keys(session)
                    started = time.perf_counter()
                    load_features(session, keys, ids)
                    best = min(best, time.perf_counter() - started)
            print(f"{label}: {len(ids)} records, {best / len(ids) * 1e6:.1f} µs a record "
                  f"(best of {args.repeat}, cold feature cache)")

        measure("sealed copies")
        with runtime.session() as session:
            session.execute(update(SourceRecord).values(features_ct=None))  # as records stored before the copies
        measure("payloads")


if __name__ == "__main__":
    main()
