"""Syncs as rq jobs on a real Redis with real workers: queued syncs carry the
source name only, scheduled syncs go through rq's scheduler and re-arm
themselves, and failures keep secrets and personal data out of Redis.

Each test uses its own queue (fixtures from tests/services/test_rq.py) and
deletes only the keys it made."""
from __future__ import annotations

import os
import pickle
import subprocess
import zlib
from datetime import timedelta

import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from cdp import jobs
from cdp.models import Source, utcnow
from cdp.sources import add_source, enqueue_sync, scheduled_sync_job, set_schedule, sync_runs
from tests.conftest import make_runtime, make_settings
from tests.connectors.vtex_fake import APP_KEY, APP_TOKEN, vtex_config
from tests.services.test_rq import _burst, _cdp_command, queue_name, worker_env  # noqa: F401 - fixtures

PERSONAL = ("ana.souza", "Ana Beatriz", "52998224725", "Souza", "Rua Augusta")


@pytest.fixture
def rq_runtime(tmp_path, redis_url, queue_name, worker_env):  # noqa: F811
    runtime = make_runtime(make_settings(tmp_path / "instance", redis_url=redis_url, queue_name=queue_name))
    worker_env(runtime.settings.instance_path)  # the worker's Runtime.from_env reads the same database and keys
    return runtime


def job_blob(conn, job_id: str) -> bytes:
    raw = conn.hgetall(f"rq:job:{job_id}")
    blob = b"\n".join([*raw.keys(), *raw.values(), zlib.decompress(raw[b"data"])])
    if raw.get(b"exc_info"):
        blob += zlib.decompress(raw[b"exc_info"])
    for _id, fields in conn.xrange(f"rq:results:{job_id}"):
        blob += b"\n".join(fields.values())
    return blob


def test_queued_sync_carries_the_source_name_only(rq_runtime, queue_name, vtex):  # noqa: F811
    add_source(rq_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    job_id = enqueue_sync(rq_runtime, "loja_vtex")
    conn = jobs.queue(rq_runtime).connection
    raw = conn.hgetall(f"rq:job:{job_id}")
    func_name, _instance, args, kwargs = pickle.loads(zlib.decompress(raw[b"data"]))
    assert (func_name, args, kwargs) == ("cdp.sources.sync_job", ("loja_vtex",), {})
    assert raw[b"description"] == b"sync of loja_vtex"

    _burst(rq_runtime, queue_name)

    job = Job.fetch(job_id, connection=conn)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"run": 1, "status": "ok", "batches": 2, "accepted": 5, "updated": 0,
                                  "duplicate": 0, "rejected": 0}
    (run,) = sync_runs(rq_runtime, "loja_vtex")
    assert (run.trigger, run.job_id, run.status) == ("queue", job_id, "ok")
    blob = job_blob(conn, job_id)
    for secret in (APP_KEY, APP_TOKEN) + PERSONAL:
        assert secret.encode() not in blob


def test_stream_and_full_travel_as_plain_options(rq_runtime, queue_name, vtex):  # noqa: F811
    add_source(rq_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    job_id = enqueue_sync(rq_runtime, "loja_vtex", stream="orders", full=True)
    job = Job.fetch(job_id, connection=jobs.queue(rq_runtime).connection)
    assert job.args == ("loja_vtex",) and job.kwargs == {"stream": "orders", "full": True}
    _burst(rq_runtime, queue_name)
    (run,) = sync_runs(rq_runtime, "loja_vtex")
    assert run.full and run.stream == "orders" and run.accepted == 5


def test_schedule_goes_through_rqs_scheduler_and_re_arms(rq_runtime, queue_name, vtex):  # noqa: F811
    add_source(rq_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    q = jobs.queue(rq_runtime)
    scheduled = ScheduledJobRegistry(queue=q)
    before = utcnow()
    set_schedule(rq_runtime, "loja_vtex", every_minutes=60)
    with rq_runtime.session() as session:
        first = session.get(Source, "loja_vtex").schedule_job_id
    assert scheduled.get_job_ids() == [first]
    when = scheduled.get_scheduled_time(first)
    assert before + timedelta(minutes=59) <= when <= utcnow() + timedelta(minutes=61)
    job = Job.fetch(first, connection=q.connection)
    assert job.func_name == "cdp.sources.scheduled_sync_job" and job.args == ("loja_vtex",)

    # Make it due now; the worker's scheduler (burst) moves it to the queue and the worker runs it.
    scheduled.schedule(job, utcnow() - timedelta(seconds=1))
    _burst(rq_runtime, queue_name, with_scheduler=True)

    assert Job.fetch(first, connection=q.connection).get_status() == JobStatus.FINISHED
    (run,) = sync_runs(rq_runtime, "loja_vtex")
    assert (run.trigger, run.job_id, run.accepted) == ("schedule", first, 5)
    with rq_runtime.session() as session:
        second = session.get(Source, "loja_vtex").schedule_job_id
    assert second != first and scheduled.get_job_ids() == [second]  # the next run is armed

    set_schedule(rq_runtime, "loja_vtex", cron="0 3 * * *")  # a new schedule replaces the armed job
    with rq_runtime.session() as session:
        third = session.get(Source, "loja_vtex").schedule_job_id
    assert scheduled.get_job_ids() == [third] and third != second
    assert scheduled.get_scheduled_time(third).hour == 3

    set_schedule(rq_runtime, "loja_vtex")
    assert scheduled.get_job_ids() == []
    with rq_runtime.session() as session:
        assert session.get(Source, "loja_vtex").schedule_job_id is None


def test_a_superseded_scheduled_job_does_nothing(rq_runtime, queue_name, vtex):  # noqa: F811
    add_source(rq_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    set_schedule(rq_runtime, "loja_vtex", every_minutes=30)
    stale = jobs.queue(rq_runtime).enqueue(scheduled_sync_job, "loja_vtex")  # e.g. left over from an old schedule
    _burst(rq_runtime, queue_name)
    assert Job.fetch(stale.id, connection=stale.connection).return_value() == {"status": "superseded"}
    assert sync_runs(rq_runtime, "loja_vtex") == []


def test_failed_sync_job_keeps_secrets_out_of_redis(rq_runtime, queue_name, vtex):  # noqa: F811
    add_source(rq_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url, app_token="WRONG-TOKEN-0000000"))
    job_id = enqueue_sync(rq_runtime, "loja_vtex")
    _burst(rq_runtime, queue_name)
    q = jobs.queue(rq_runtime)
    assert FailedJobRegistry(queue=q).get_job_ids() == [job_id]
    result = Job.fetch(job_id, connection=q.connection).latest_result()
    assert "SyncFailed: vtex: credentials rejected (HTTP 401)" in result.exc_string
    blob = job_blob(q.connection, job_id)
    for secret in (APP_KEY, "WRONG-TOKEN-0000000"):
        assert secret.encode() not in blob
    (run,) = sync_runs(rq_runtime, "loja_vtex")
    assert run.status == "failed" and "credentials rejected" in run.error


def test_cli_queues_and_a_separate_worker_process_syncs(tmp_path, backend, redis_url, queue_name, vtex):  # noqa: F811
    instance = tmp_path / "instance"
    runtime = make_runtime(make_settings(instance, backend, redis_url=redis_url, queue_name=queue_name))
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CDP_INSTANCE_PATH=str(instance), REDIS_URL=redis_url, CDP_QUEUE=queue_name)
    if backend:
        env["DATABASE_URL"] = backend
    queued = subprocess.run(_cdp_command() + ["sources", "sync", "loja_vtex"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("queued sync of loja_vtex (job ")
    worker = subprocess.run(_cdp_command() + ["worker", "--burst"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert worker.returncode == 0, worker.stderr
    (run,) = sync_runs(runtime, "loja_vtex")
    assert (run.trigger, run.status, run.accepted) == ("queue", "ok", 5)
    output = worker.stdout + worker.stderr
    for needle in (APP_KEY, APP_TOKEN) + PERSONAL:
        assert needle not in output
