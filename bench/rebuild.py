"""Batch rebuild of one stored base, repeatable: store the synthetic Brazilian
set once without resolution (`ingest --no-resolve`), then rebuild a fresh copy
of it as often as wanted, with this checkout or another one (say, a worktree
of the previous release), so two releases are compared on the same records
back to back. This machine's speed drifts during a day; runs made apart are
not comparable.

    .venv/bin/python bench/rebuild.py store --people 65000 /tmp/base
    .venv/bin/python bench/rebuild.py rebuild /tmp/base
    git worktree add /tmp/previous <commit>
    .venv/bin/python bench/rebuild.py rebuild /tmp/base --code /tmp/previous

Store with the older of the two releases when their migrations differ (a
newer release upgrades the copy it rebuilds; an older one cannot read a newer
schema). Each rebuild prints one JSON line: seconds in all and per phase,
pairwise F1 against the generator's truth, peak memory of the process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("CDP_BENCH_CODE") or HERE.parent)  # the checkout whose code runs
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(HERE))


def store(people: int, base: Path) -> None:
    from synthetic import Dataset, write_dataset

    from tests.conftest import make_runtime, make_settings

    if base.exists():
        sys.exit(f"{base} exists: give a new directory")
    (base / "data").mkdir(parents=True)
    write_dataset(people, base / "data")
    ds = Dataset(base / "data")
    runtime = make_runtime(make_settings(base / "instance"))
    started = time.perf_counter()
    ds.ingest(runtime, resolve=False)
    print(json.dumps({"records": ds.records, "stored_s": round(time.perf_counter() - started, 1)}))


def rebuild(base: Path, processes: int | None) -> None:
    from synthetic import Dataset

    from cdp.store import tune_gc
    from identity.rebuild import rebuild as run_rebuild
    from tests.conftest import make_runtime, make_settings

    tune_gc()  # as the `cdp` command does

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "instance"
        shutil.copytree(base / "instance", copy)
        overrides = {"rebuild_processes": processes} if processes else {}
        runtime = make_runtime(make_settings(copy, **overrides))
        started = time.perf_counter()
        stats = run_rebuild(runtime)
        seconds = time.perf_counter() - started
        f1 = Dataset(base / "data").score(runtime)["f1"]
    print(json.dumps({"code": str(ROOT), "seconds": round(seconds, 1), "phase_seconds": stats["phase_seconds"],
                      "f1": f1, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10}), flush=True)


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # per-record warnings of the generator's data are not the point here
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stored = commands.add_parser("store", help="generate the set and store it without resolving it")
    stored.add_argument("--people", type=int, default=20000)
    stored.add_argument("base", type=Path)
    rebuilt = commands.add_parser("rebuild", help="rebuild a fresh copy of a stored base")
    rebuilt.add_argument("base", type=Path)
    rebuilt.add_argument("--code", type=Path, help="another checkout whose code runs the rebuild")
    rebuilt.add_argument("--processes", type=int, help="pair-scoring processes (default: one per core)")
    args = parser.parse_args()
    if args.command == "store":
        store(args.people, args.base)
    elif args.code:  # the other checkout's code, in a process of its own
        env = {**os.environ, "CDP_BENCH_CODE": str(args.code.resolve())}
        extra = ["--processes", str(args.processes)] if args.processes else []
        sys.exit(subprocess.call([sys.executable, __file__, "rebuild", str(args.base), *extra], env=env))
    else:
        if not (args.base / "instance").is_dir():
            sys.exit(f"{args.base} holds no stored base: run `bench/rebuild.py store` first")
        rebuild(args.base, args.processes)


if __name__ == "__main__":
    main()
