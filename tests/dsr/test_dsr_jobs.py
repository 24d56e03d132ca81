"""Request work on a real Redis with a real rq worker: payloads are request
ids, descriptions name the work, failures carry no personal data, and a
failed request is reprocessed to completion."""
from __future__ import annotations

import base64
import logging
import os
import pickle
import uuid
import zlib

import pytest
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from cdp import jobs
from consent.dsr import execute as ex
from consent.dsr import service
from consent.dsr.jobs import submit_dispatch
from tests.conftest import make_runtime, make_settings
from tests.dsr.conftest import VICTIM, add_person, codes_for

PII = ["helena.prado@example.com", "helena", "52998224725", "529.982.247-25", "+5511988881234", "98888-1234",
       "Prado Siqueira"]


def _pii_in(blob: bytes) -> list[str]:
    lowered = blob.lower()
    return [v for v in PII if v.lower().encode() in lowered]


@pytest.fixture
def queue_name(redis_url):
    from redis import Redis

    name = f"cdp-test-{uuid.uuid4().hex}"
    yield name
    conn = Redis.from_url(redis_url)
    job_ids = {key.decode().split(":", 2)[2] for key in conn.scan_iter(match="rq:job:*")
               if conn.hget(key, "origin") == name.encode()}
    doomed = set(conn.scan_iter(match=f"*{name}*"))
    doomed |= {key for key in conn.scan_iter(match="rq:worker:*")
               if conn.type(key) == b"hash" and conn.hget(key, "queues") == name.encode()}
    for job_id in job_ids:
        doomed |= set(conn.scan_iter(match=f"rq:*{job_id}*"))
    if doomed:
        conn.delete(*doomed)
    conn.srem("rq:queues", f"rq:queue:{name}")


@pytest.fixture
def rq_runtime(tmp_path, redis_url, queue_name, monkeypatch):
    for name in list(os.environ):
        if name.startswith("CDP_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    instance = tmp_path / "instance"
    runtime = make_runtime(make_settings(instance, redis_url=redis_url, queue_name=queue_name))
    # The worker (in this process) reads the same instance from the environment.
    monkeypatch.setenv("CDP_INSTANCE_PATH", str(instance))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CDP_QUEUE", queue_name)
    jobs._worker_runtime.cache_clear()
    yield runtime
    jobs._worker_runtime.cache_clear()


def _burst(runtime) -> None:
    q = jobs.queue(runtime)
    SimpleWorker([q], connection=q.connection, name=f"dsr-{uuid.uuid4().hex[:6]}",
                 log_job_description=False).work(burst=True)


def _everything_redis_keeps(conn, job_id: str) -> bytes:
    raw = conn.hgetall(f"rq:job:{job_id}")
    blob = b"\n".join([*raw.keys(), *raw.values(), zlib.decompress(raw[b"data"])])
    if raw.get(b"exc_info"):
        blob += zlib.decompress(raw[b"exc_info"])
    for _entry, fields in conn.xrange(f"rq:results:{job_id}"):
        blob += b"\n".join(fields.values())
        if fields.get(b"exc_string"):
            blob += zlib.decompress(base64.b64decode(fields[b"exc_string"]))
    return blob


def test_scanner_sees_the_victim():
    assert _pii_in(b"x Helena.Prado@example.com y") and _pii_in(pickle.dumps({"cpf": "52998224725"}))


def test_request_jobs_carry_the_request_id_only_and_fail_without_personal_data(rq_runtime, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    add_person(rq_runtime, VICTIM)
    conn = jobs.queue(rq_runtime).connection

    # 1. Verification codes are sent by a job.
    opened = service.open_request(rq_runtime, type="deletion", identifiers={"email": VICTIM["email"],
                                                                             "cpf": VICTIM["cpf"]})
    dispatch_id = submit_dispatch(rq_runtime, opened.request_id)
    assert codes_for(rq_runtime, opened.request_id) == {}  # queued, not done in the caller
    raw = conn.hgetall(f"rq:job:{dispatch_id}")
    func_name, _instance, args, kwargs = pickle.loads(zlib.decompress(raw[b"data"]))
    assert (func_name, args, kwargs) == ("consent.dsr.jobs.dispatch_job", (opened.request_id,), {})
    assert raw[b"description"] == b"dsr verification codes"
    _burst(rq_runtime)
    code = codes_for(rq_runtime, opened.request_id)[VICTIM["email"]]
    assert _pii_in(_everything_redis_keeps(conn, dispatch_id)) == []
    assert code.encode() not in _everything_redis_keeps(conn, dispatch_id)

    # 2. The deletion runs as a job; a step fails with personal data in its exception text.
    assert service.verify_code(rq_runtime, opened.request_id, opened.token, code).verified

    def failing(ctx):
        raise RuntimeError(f"could not shred {VICTIM['email']} / {VICTIM['cpf']}")

    monkeypatch.setitem(ex.STEPS, "shred", failing)
    service.execute(rq_runtime, opened.request_id, actor="staff:dpo")
    queued = jobs.queue(rq_runtime).job_ids
    assert len(queued) == 1
    raw = conn.hgetall(f"rq:job:{queued[0]}")
    assert pickle.loads(zlib.decompress(raw[b"data"]))[2] == (opened.request_id,)
    assert raw[b"description"] == b"dsr execute"
    _burst(rq_runtime)

    job = Job.fetch(queued[0], connection=conn)
    assert job.retries_left == len(jobs.RETRY_INTERVALS) - 1  # failed once, retry scheduled
    # The worker logged the failure (rq keeps the traceback text): the step and class, not the message.
    tracebacks = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records if r.name.startswith("rq"))
    assert "step shred failed (RuntimeError)" in "\n".join(
        logging.Formatter().format(r) for r in caplog.records if r.name.startswith("rq"))
    assert _pii_in(tracebacks.encode()) == []
    assert _pii_in(_everything_redis_keeps(conn, queued[0])) == []
    view = service.get_request(rq_runtime, opened.request_id)
    assert view["status"] == "in_progress"
    assert {s["name"]: s["status"] for s in view["steps"]}["shred"] == "failed"

    # 3. Fixed: the scheduled retry reprocesses the request from the failed step.
    monkeypatch.undo()
    monkeypatch.setenv("CDP_INSTANCE_PATH", str(rq_runtime.settings.instance_path))
    monkeypatch.setenv("REDIS_URL", rq_runtime.settings.redis_url)
    monkeypatch.setenv("CDP_QUEUE", rq_runtime.settings.queue_name)
    scheduled = ScheduledJobRegistry(queue=jobs.queue(rq_runtime))
    for job_id in scheduled.get_job_ids():
        scheduled.requeue(job_id)
    _burst(rq_runtime)
    view = service.get_request(rq_runtime, opened.request_id)
    assert {s["name"]: s["status"] for s in view["steps"]}["shred"] == "done"
    assert view["status"] == "in_progress" and view["outcome"] == "awaiting_systems"
    service.confirm_system(rq_runtime, opened.request_id, "source:crm", actor="staff:dpo")
    _burst(rq_runtime)
    assert service.get_request(rq_runtime, opened.request_id)["status"] == "completed"

    # Nothing personal in any log line of the whole run.
    logged = "\n".join(logging.Formatter().format(r) for r in caplog.records).encode()  # tracebacks included
    assert caplog.records and _pii_in(logged) == []
