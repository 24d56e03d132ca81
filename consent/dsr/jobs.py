"""Request work as jobs: rq when REDIS_URL is set, in-process otherwise.
A payload is the request id and nothing else; descriptions name the kind of
work only; failures carry exception class names (cdp.jobs rules)."""
from __future__ import annotations

import logging

from cdp.jobs import RETRY_INTERVALS, _worker_runtime, queue
from cdp.store import Runtime

log = logging.getLogger(__name__)


def execute_job(request_id: str) -> str:
    from consent.dsr.execute import run_request

    return run_request(_worker_runtime(), request_id)


def dispatch_job(request_id: str) -> int:
    from consent.dsr.service import dispatch_codes

    return dispatch_codes(_worker_runtime(), request_id)


def _enqueue(runtime: Runtime, func, request_id: str, description: str) -> str:
    from rq import Retry

    job = queue(runtime).enqueue(func, request_id, retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
                                 description=description, job_timeout=1800)
    return job.id


def submit_execution(runtime: Runtime, request_id: str) -> str | None:
    """Run a request's steps now (no Redis) or queue them; returns the rq job id."""
    if runtime.settings.redis_url:
        return _enqueue(runtime, execute_job, request_id, "dsr execute")
    from consent.dsr.execute import StepFailed, run_request

    try:
        run_request(runtime, request_id)
    except StepFailed as exc:  # recorded on the request: a person sees it and reprocesses
        log.warning("%s", exc)
    return None


def submit_dispatch(runtime: Runtime, request_id: str) -> str | None:
    """Send verification codes (a job, so the requester's answer never waits on it)."""
    if runtime.settings.redis_url:
        return _enqueue(runtime, dispatch_job, request_id, "dsr verification codes")
    from consent.dsr.service import dispatch_codes

    dispatch_codes(runtime, request_id)
    return None
