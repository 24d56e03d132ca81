"""Benchmark the main job: `cdp demo --no-serve` on SQLite and on PostgreSQL.

    .venv/bin/python bench/demo.py [--people 1000] [--pg postgresql://postgres@127.0.0.1:5432/test]

Each run is a fresh process on a fresh database; prints wall time,
records/second and peak memory (max RSS) per backend.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time


# The child reports its own peak RSS, so each backend's figure is its own.
CHILD = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv = ['cdp'] + sys.argv[1:]\n"
    "from cdp.cli import main\n"
    "main()\n"
)


def run(people: int, env_extra: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(CDP_INSTANCE_PATH=tmp, **env_extra)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, "demo", "--no-serve", "--people", str(people)],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"demo failed: {proc.stderr.strip().splitlines()[-1]}")
        records = int(re.search(r"records in:\s+(\d+)", proc.stdout).group(1))
        inner = float(re.search(r"time: ([\d.]+) s", proc.stdout).group(1))
        f1 = re.search(r"F1 ([\d.]+)", proc.stdout).group(1)
        peak_mb = int(re.search(r"PEAK_KB (\d+)", proc.stderr).group(1)) / 1024
        return {"records": records, "wall_s": wall, "ingest_resolve_s": inner, "rec_per_s": records / inner,
                "peak_mb": peak_mb, "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--pg", default=os.environ.get("CDP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    rows = [("sqlite", run(args.people, {}))]
    try:
        import psycopg

        name = f"cdp_bench_{secrets.token_hex(4)}"
        with psycopg.connect(args.pg, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            rows.append(("postgresql", run(args.people, {"DATABASE_URL": args.pg.rsplit("/", 1)[0] + "/" + name})))
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.OperationalError as exc:
        print(f"postgresql: skipped ({type(exc).__name__})")

    print(f"cdp demo --no-serve --people {args.people}")
    print(f"{'backend':<11} {'records':>8} {'wall s':>8} {'ingest+resolve s':>17} {'rec/s':>8} {'peak MB':>8} {'F1':>7}")
    for backend, r in rows:
        print(f"{backend:<11} {r['records']:>8} {r['wall_s']:>8.1f} {r['ingest_resolve_s']:>17.1f} "
              f"{r['rec_per_s']:>8.0f} {r['peak_mb']:>8.0f} {r['f1']:>7}")


if __name__ == "__main__":
    main()
