"""Background work. With REDIS_URL set, work is queued on rq and done by
`cdp worker`; without it, the same functions run in-process.

Job payloads hold ids only (record ids, source names): never personal data,
since Redis keeps payloads, descriptions and tracebacks in clear.
"""
from __future__ import annotations

import logging
from functools import lru_cache

from cdp.store import Runtime, get_engine, server_advice

log = logging.getLogger(__name__)

RETRY_INTERVALS = [5, 30, 120]
JOB_CHUNK = 500  # record ids per job: bounded payloads and bounded work per job


@lru_cache(maxsize=1)
def _worker_runtime() -> Runtime:
    # A worker reads the same environment as the app (DATABASE_URL, keys).
    return Runtime.from_env()


def redis_connection(url: str):
    from redis import Redis

    return Redis.from_url(url)


def queue(runtime: Runtime):
    from rq import Queue

    return Queue(runtime.settings.queue_name, connection=redis_connection(runtime.settings.redis_url))


# -- job functions (ids in, nothing personal out) -----------------------------

def resolve_job(record_ids: list[str]) -> int:
    from identity.resolve import resolve_records

    decisions = resolve_records(_worker_runtime(), record_ids)
    return len(decisions)


# -- submission ---------------------------------------------------------------

def submit_resolution(runtime: Runtime, record_ids: list[str]) -> list[str]:
    """Resolve records now (no Redis) or queue them; returns rq job ids."""
    if not runtime.settings.redis_url:
        from identity.resolve import resolve_records

        resolve_records(runtime, record_ids)
        return []
    from rq import Retry

    q = queue(runtime)
    job_ids = []
    for start in range(0, len(record_ids), JOB_CHUNK):
        chunk = record_ids[start:start + JOB_CHUNK]
        job = q.enqueue(
            resolve_job,
            chunk,
            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            description=f"resolve {len(chunk)} records",
            job_timeout=600,
        )
        job_ids.append(job.id)
    log.info("queued resolution jobs=%d records=%d", len(job_ids), len(record_ids))
    return job_ids


def run_worker(runtime: Runtime, burst: bool = False, with_scheduler: bool = True, fork: bool = True) -> None:
    from rq import SimpleWorker, Worker

    if not runtime.settings.redis_url:
        raise SystemExit("error: REDIS_URL is not set; without it jobs run in-process and no worker is needed")
    conn = redis_connection(runtime.settings.redis_url)
    for advice in server_advice(get_engine(runtime.settings.database_url)):
        log.warning(advice)
    # Forking a fresh process per job isolates jobs; not forking keeps the
    # worker's in-memory caches (features of recently seen records, unwrapped
    # keys) warm from one resolution job to the next, for ingest-heavy loads.
    worker_class = Worker if fork else SimpleWorker
    # Job descriptions hold counts only, but keep rq from logging arguments.
    worker = worker_class([runtime.settings.queue_name], connection=conn, log_job_description=False)
    worker.work(burst=burst, with_scheduler=with_scheduler)
