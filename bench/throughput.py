"""Incremental ingest + resolve throughput, as a deployment runs it: the
ingesting process stores each batch and queues its record ids on rq; a
`cdp worker` process resolves them (PostgreSQL + Redis, two processes on the
machine's cores). The data arrive in equal rounds, so the figures show
whether speed or the worker's memory change as profiles accumulate.

    .venv/bin/python bench/throughput.py [--people 20000] [--rounds 4] [--pg URL] [--redis URL]
    .venv/bin/python bench/throughput.py --workers 2        # two `cdp worker` processes
    .venv/bin/python bench/throughput.py --in-process      # one process, no Redis (the embedded default)

Records come from the `cdp demo` generator (Brazilian people in five
sources), written to CSV / JSON-lines files and read by the file connector.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # per-record warnings of the generator's data are not the point here
    from cdp.store import tune_gc

    tune_gc()  # as the `cdp` command does
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pg", default=os.environ.get("CDP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("CDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="no Redis: resolve in the ingesting process")
    args = parser.parse_args()

    import psycopg
    from redis import Redis

    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from tests.conftest import make_runtime, make_settings

    name = f"cdp_tp_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0] + "/" + name
    workers: list = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ds = generate(tmp / "data", people=args.people, seed=11)
            instance = tmp / "instance"
            redis_url = None if args.in_process else args.redis
            queue = f"tp-{secrets.token_hex(3)}"
            runtime = make_runtime(make_settings(instance, url, redis_url, queue_name=queue))
            if redis_url:
                Redis.from_url(redis_url).flushdb()
                env = {**os.environ, "CDP_INSTANCE_PATH": str(instance), "DATABASE_URL": url, "REDIS_URL": redis_url,
                       "CDP_QUEUE": queue}
                workers = [subprocess.Popen([str(Path(sys.executable).parent / "cdp"), "worker", "--no-fork"], env=env,
                                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                           for _ in range(args.workers)]
            rows = _read_all(ds.files)
            per_round = -(-len(rows) // args.rounds)
            print(f"{len(rows)} records from {args.people} people, {args.rounds} rounds, "
                  f"{'in-process' if args.in_process else f'ingest process + {args.workers} rq worker(s)'}, PostgreSQL")
            with psycopg.connect(args.pg) as conn:  # the server's settings decide much of a large base's speed
                print("server: " + ", ".join(f"{name} {conn.execute(f'SHOW {name}').fetchone()[0]}" for name in SERVER_SETTINGS))
            total_t = 0.0
            for r in range(args.rounds):
                part = rows[r * per_round:(r + 1) * per_round]
                t0 = time.perf_counter()
                cpu0 = _cpu_seconds([w.pid for w in workers])
                for source, records in _by_source(part).items():
                    ingest_connector(runtime, _Listed(source, records), quiet=True, bar=_NoBar())
                # Polled twice a second: on a server without autovacuum the pending
                # index fills with resolved records' dead entries, and at a million
                # records each poll cost the server ~15 ms (8% of its time at 20 a second).
                while _pending(runtime):
                    time.sleep(0.5)
                dt = time.perf_counter() - t0
                cpu = {k: round(v - cpu0[k], 1) for k, v in _cpu_seconds([w.pid for w in workers]).items()}
                total_t += dt
                print(json.dumps({"round": r + 1, "records": len(part), "seconds": round(dt, 1),
                                  "records_per_s": round(len(part) / dt), "stored_before": r * per_round,
                                  "ingest_peak_mb": _peak_mb(os.getpid()),
                                  "worker_peak_mb": max((_peak_mb(w.pid) for w in workers), default=None),
                                  "cpu_seconds": cpu}), flush=True)
            print(f"overall: {round(len(rows) / total_t)} records/s")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:  # an idle rq worker may sit in its blocking dequeue
                w.kill()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SERVER_SETTINGS = ("server_version", "shared_buffers", "max_wal_size", "checkpoint_timeout", "autovacuum")


def _pending(runtime) -> bool:
    from sqlalchemy import select, text

    from cdp.models import PENDING_SQL, SourceRecord

    with runtime.session() as session:
        return session.scalar(select(SourceRecord.id).where(text(PENDING_SQL)).limit(1)) is not None


def _cpu_seconds(worker_pids: list[int]) -> dict:
    """CPU time used so far by this process, the workers and the PostgreSQL
    server processes (Linux /proc): where a round's time went."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    postgres = sum(used(p.name) for p in Path("/proc").iterdir()
                   if p.name.isdigit() and _comm(p) == "postgres")
    return {"ingest": used(os.getpid()), "workers": sum(used(pid) for pid in worker_pids), "postgres": postgres}


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _peak_mb(pid: int) -> int:
    """Peak resident memory of a process so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def _read_all(files) -> list[tuple[str, dict]]:
    from plugins.file_source import FileSource

    rows = []
    for data, mapping in files:
        source = FileSource({"path": str(data)} | ({"mapping": str(mapping)} if mapping else {}))
        for batch in source.read(batch_size=5000):
            rows.extend((source.source_name or rec["source"], rec) for rec in batch.records)
    # Interleaved sources, as data arrive in a live system (a stable hash: the same order every run).
    rows.sort(key=lambda sr: zlib.crc32(str(sr[1].get("external_id")).encode()))
    return rows


def _by_source(rows):
    out: dict[str, list] = {}
    for source, rec in rows:
        out.setdefault(source, []).append(rec)
    return out


class _Listed:
    """Already-read records served as a connector (batches of 500)."""

    name = "file"

    def __init__(self, source: str, records: list[dict]):
        self.source_name, self.records = source, records

    def read(self, batch_size: int = 500):
        from cdp.connectors import Batch

        for start in range(0, len(self.records), batch_size):
            yield Batch(records=self.records[start:start + batch_size], errors=[])


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


if __name__ == "__main__":
    main()
