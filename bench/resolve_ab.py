"""Resolution alone on a fixed stored base, to compare two versions of the
code back to back. `throughput.py` takes seven minutes a run, long enough
for this machine's speed to drift by a third; a trial here takes half a
minute, so trials of two checkouts alternated (A B A B) compare.

    .venv/bin/python bench/resolve_ab.py build [--people 65000] [--code OLDER_CHECKOUT]
    .venv/bin/python bench/resolve_ab.py trial [--code CHECKOUT] [--records 15000]

`build` stores the `throughput.py` data set in PostgreSQL database
`cdp_ab_base` (keys in /tmp/cdp_ab): four fifths ingested and resolved, the
last fifth stored unresolved. Build it with the older checkout: a trial
migrates its copy to the trial code's schema. `trial` copies the base
(CREATE DATABASE ... TEMPLATE), vacuums and analyzes it (as autovacuum
would), resolves 3,000 of the pending records to warm up, then times the
next --records in chunks of 500 as a worker's jobs do. Prints wall seconds,
the resolving process's CPU seconds and the PostgreSQL server's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE, COPY = "cdp_ab_base", "cdp_ab_trial"
INSTANCE = Path("/tmp/cdp_ab/instance")
WARM_UP = 3000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["build", "trial", "_build", "_trial"])
    parser.add_argument("--code", default=str(ROOT), help="checkout whose code runs (default: this one)")
    parser.add_argument("--people", type=int, default=65000)
    parser.add_argument("--records", type=int, default=15000)
    parser.add_argument("--pg", default=os.environ.get("CDP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if not args.mode.startswith("_"):
        # The measured work runs in a child that imports the chosen checkout.
        code = Path(args.code).resolve()
        env = {**os.environ, "PYTHONPATH": str(code)}
        argv = [sys.executable, str(Path(__file__).resolve()), "_" + args.mode, "--people", str(args.people),
                "--records", str(args.records), "--pg", args.pg]
        raise SystemExit(subprocess.call(argv, cwd=code, env=env))
    # The chosen checkout's own helpers: importing them puts that checkout first on the path.
    sys.path.insert(0, str(Path.cwd() / "bench"))
    server = args.pg.rsplit("/", 1)[0] + "/"
    (build if args.mode == "_build" else trial)(args, server)


def build(args, server: str) -> None:
    import logging

    import psycopg

    logging.disable(logging.WARNING)
    from throughput import _by_source, _Listed, _NoBar, _read_all

    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from cdp.store import tune_gc
    from tests.conftest import make_runtime, make_settings

    tune_gc()
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BASE}"')
    runtime = make_runtime(make_settings(INSTANCE, server + BASE, None))
    ds = generate(INSTANCE.parent / "data", people=args.people, seed=11)
    rows = _read_all(ds.files)
    per_round = -(-len(rows) // 5)
    for r in range(5):
        t0 = time.perf_counter()
        for source, records in _by_source(rows[r * per_round:(r + 1) * per_round]).items():
            ingest_connector(runtime, _Listed(source, records), quiet=True, bar=_NoBar(), resolve=r < 4)
        print(f"round {r + 1} of 5 stored{'' if r < 4 else ' (unresolved)'} in {time.perf_counter() - t0:.0f} s",
              flush=True)


def trial(args, server: str) -> None:
    import logging

    import psycopg

    logging.disable(logging.WARNING)
    from throughput import _cpu_seconds

    def server_cpu() -> float:
        return _cpu_seconds([])["postgres"]

    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{COPY}" TEMPLATE "{BASE}"')
    from cdp.store import tune_gc
    from identity.resolve import pending_record_ids, resolve_records
    from tests.conftest import make_runtime, make_settings

    tune_gc()
    runtime = make_runtime(make_settings(INSTANCE, server + COPY, None))  # migrates the copy to this code's schema
    with psycopg.connect(server + COPY, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    ids = pending_record_ids(runtime)
    if len(ids) < WARM_UP + args.records:
        raise SystemExit(f"error: the base holds {len(ids)} pending records; use fewer --records or build it larger")
    for start in range(0, WARM_UP, 500):
        resolve_records(runtime, ids[start:start + 500])
    cpu0, server0, t0 = time.process_time(), server_cpu(), time.perf_counter()
    for start in range(WARM_UP, WARM_UP + args.records, 500):
        resolve_records(runtime, ids[start:start + 500])
    wall = time.perf_counter() - t0
    print(json.dumps({"code": os.getcwd(), "records": args.records, "seconds": round(wall, 1),
                      "records_per_s": round(args.records / wall), "cpu_seconds": round(time.process_time() - cpu0, 1),
                      "server_cpu_seconds": round(server_cpu() - server0, 1)}), flush=True)
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')


if __name__ == "__main__":
    main()
