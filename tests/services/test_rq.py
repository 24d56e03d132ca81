"""Background resolution on a real Redis with real rq workers.

Every test uses its own queue name and deletes only the keys it created
(its queue, registries, jobs and results); nothing else in Redis is touched."""
from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import func, select

from cdp import jobs
from cdp.ingest import ingest_batch
from cdp.models import Profile, SourceRecord
from cdp.store import get_engine, server_advice
from tests.conftest import make_runtime, make_settings
from identity.normalize import normalize_cpf, normalize_email, normalize_name, normalize_phone

# Two sources, one person (same CPF written two ways), plus someone else.
RECORDS = {
    "erp_clientes": [
        {"external_id": "ERP-4411", "identifiers": {"cpf": "390.533.447-05", "email": "Ruth.Albuquerque@Example.com.br",
                                                    "phone": "(21) 98123-4567"},
         "traits": {"full_name": "Ruth Albuquerque Tavares"}},
        {"external_id": "ERP-4412", "identifiers": {"cpf": "111.444.777-35", "email": "joaquim.bittencourt@example.org"},
         "traits": {"full_name": "Joaquim Bittencourt Lemos"}},
    ],
    "loja_virtual": [
        {"external_id": "PED-9001", "identifiers": {"cpf": "39053344705", "phone": "+55 21 98123-4567",
                                                    "email": "ruth.tavares@example.net"},
         "traits": {"first_name": "Ruth", "last_name": "Tavares"}},
    ],
}
RECORD_COUNT = sum(len(v) for v in RECORDS.values())


def _pii_forms() -> set[str]:
    """Every personal value in RECORDS, as written and as normalized."""
    forms: set[str] = set()
    for records in RECORDS.values():
        for rec in records:
            ids = rec["identifiers"]
            for email in [ids["email"]] if "email" in ids else []:
                forms |= {email, email.lower(), normalize_email(email).value}
            for phone in [ids["phone"]] if "phone" in ids else []:
                normalized = normalize_phone(phone).value
                forms |= {phone, normalized, normalized.removeprefix("+"), normalized.removeprefix("+55")}
            for cpf in [ids["cpf"]] if "cpf" in ids else []:
                forms |= {cpf, normalize_cpf(cpf).value}
            traits = rec["traits"]
            for name in (traits.get("full_name"), traits.get("first_name"), traits.get("last_name")):
                if name and len(name) >= 5:
                    forms |= {name, name.lower(), normalize_name(name).match}
    return forms


PII = _pii_forms()


def _pii_in(blob: bytes) -> list[str]:
    lowered = blob.lower()
    return sorted(v for v in PII if v.encode("utf-8") in blob or v.lower().encode("utf-8") in lowered)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def queue_name(redis_url):
    """A queue of our own; afterwards, delete only the keys this test made."""
    from redis import Redis

    name = f"cdp-test-{uuid.uuid4().hex}"
    yield name
    conn = Redis.from_url(redis_url)
    job_ids: set[str] = set()
    for key in conn.scan_iter(match="rq:job:*"):
        if conn.hget(key, "origin") == name.encode():
            job_ids.add(key.decode().split(":", 2)[2])
    doomed = set(conn.scan_iter(match=f"*{name}*"))
    # Workers that served only our queue (they would expire on their own).
    doomed |= {key for key in conn.scan_iter(match="rq:worker:*")
               if conn.type(key) == b"hash" and conn.hget(key, "queues") == name.encode()}
    for job_id in job_ids:
        doomed |= set(conn.scan_iter(match=f"rq:*{job_id}*"))
    if doomed:
        conn.delete(*doomed)
    conn.srem("rq:queues", f"rq:queue:{name}")


@pytest.fixture
def rq_runtime(tmp_path, redis_url, queue_name):
    """Runtime with REDIS_URL set (SQLite file database) and our own queue."""
    return make_runtime(make_settings(tmp_path / "instance", redis_url=redis_url, queue_name=queue_name))


@pytest.fixture
def worker_env(monkeypatch):
    """Point the in-process job runtime (`Runtime.from_env`) at a database."""
    for name in list(os.environ):
        if name.startswith("CDP_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    jobs._worker_runtime.cache_clear()

    def configure(instance: Path, database_url: str | None = None) -> None:
        monkeypatch.setenv("CDP_INSTANCE_PATH", str(instance))
        if database_url:
            monkeypatch.setenv("DATABASE_URL", database_url)
        else:
            monkeypatch.delenv("DATABASE_URL", raising=False)
        jobs._worker_runtime.cache_clear()

    yield configure
    jobs._worker_runtime.cache_clear()


def _ingest_all(runtime) -> tuple[list[str], list[str]]:
    record_ids, job_ids = [], []
    for source, records in RECORDS.items():
        summary = ingest_batch(runtime, source, records)
        assert summary.counts()["accepted"] == len(records)
        record_ids += summary.record_ids
        job_ids += summary.job_ids
    return record_ids, job_ids


def _statuses(runtime) -> dict[str, str]:
    with runtime.session() as session:
        return dict(session.execute(select(SourceRecord.id, SourceRecord.status)).all())


def _burst(runtime, name: str, **kwargs) -> None:
    q = jobs.queue(runtime)
    worker = SimpleWorker([q], connection=q.connection, name=f"{name}-{uuid.uuid4().hex[:6]}",
                          log_job_description=False)
    worker.work(burst=True, **kwargs)


def _cdp_command() -> list[str]:
    script = Path(sys.executable).parent / "cdp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdp.cli"]


def test_pii_scan_finds_the_test_records():
    # The scanner is not vacuous: each record, serialized, is caught.
    for records in RECORDS.values():
        for rec in records:
            assert _pii_in(json.dumps(rec, ensure_ascii=False).encode("utf-8"))
            assert _pii_in(zlib.decompress(zlib.compress(pickle.dumps(rec))))
    assert _pii_in(b"x 39053344705 y") == ["39053344705"]


# -- queueing --------------------------------------------------------------------------


def test_ingest_with_redis_queues_jobs_and_leaves_records_pending(rq_runtime, queue_name):
    record_ids, job_ids = _ingest_all(rq_runtime)

    assert len(job_ids) == len(RECORDS)  # one job per batch (each well under JOB_CHUNK)
    assert len(record_ids) == RECORD_COUNT
    q = jobs.queue(rq_runtime)
    assert q.name == queue_name
    assert sorted(q.job_ids) == sorted(job_ids)
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=q.connection)
        assert job.get_status() == JobStatus.QUEUED
        assert job.func_name == "cdp.jobs.resolve_job"
    assert set(_statuses(rq_runtime).values()) == {"pending"}
    with rq_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(Profile)) == 0
        assert session.scalar(select(func.count()).select_from(SourceRecord)
                              .where(SourceRecord.profile_id.is_not(None))) == 0


def test_job_payloads_carry_record_ids_only(rq_runtime):
    record_ids, job_ids = _ingest_all(rq_runtime)
    conn = jobs.queue(rq_runtime).connection

    queued_ids: list[str] = []
    for job_id in job_ids:
        raw = conn.hgetall(f"rq:job:{job_id}")
        assert raw, f"job {job_id} not in Redis"
        assert {b"data", b"description"} <= set(raw)
        data = zlib.decompress(raw[b"data"])
        blob = b"\n".join([*raw.keys(), *raw.values(), data])
        assert _pii_in(blob) == [], f"personal data in rq job {job_id}"
        # The call itself: the job function and one list of record ids.
        func_name, _instance, args, kwargs = pickle.loads(data)
        assert func_name == "cdp.jobs.resolve_job"
        assert kwargs == {}
        assert len(args) == 1 and isinstance(args[0], list)
        queued_ids += args[0]
        assert raw[b"description"].decode() == f"resolve {len(args[0])} records"
    assert sorted(queued_ids) == sorted(record_ids)


def test_in_process_worker_resolves_queued_records(rq_runtime, worker_env, queue_name):
    record_ids, job_ids = _ingest_all(rq_runtime)
    worker_env(rq_runtime.settings.instance_path)  # the default SQLite file of this instance

    _burst(rq_runtime, queue_name)

    assert _statuses(rq_runtime) == {rid: "resolved" for rid in record_ids}
    conn = jobs.queue(rq_runtime).connection
    for job_id in job_ids:
        assert Job.fetch(job_id, connection=conn).get_status() == JobStatus.FINISHED
    with rq_runtime.session() as session:
        profiles = session.scalars(select(Profile).where(Profile.status == "active")).all()
        by_record = dict(session.execute(select(SourceRecord.id, SourceRecord.profile_id)).all())
    assert len(profiles) == 2  # Ruth (two sources, one CPF) and Joaquim
    ruth_erp, _joaquim, ruth_loja = record_ids
    assert by_record[ruth_erp] == by_record[ruth_loja] is not None
    assert sorted(p.record_count for p in profiles) == [1, 2]


def test_separate_worker_process_resolves_queued_records(tmp_path, backend, redis_url, queue_name):
    instance = tmp_path / "instance"
    runtime = make_runtime(make_settings(instance, backend, redis_url=redis_url, queue_name=queue_name))
    record_ids, job_ids = _ingest_all(runtime)
    assert job_ids and set(_statuses(runtime).values()) == {"pending"}

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDP_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CDP_INSTANCE_PATH=str(instance), REDIS_URL=redis_url, CDP_QUEUE=queue_name)
    if backend:
        env["DATABASE_URL"] = backend
    worker = subprocess.run(_cdp_command() + ["worker", "--burst"], env=env, capture_output=True, text=True,
                            timeout=300)

    assert worker.returncode == 0, worker.stderr
    assert _statuses(runtime) == {rid: "resolved" for rid in record_ids}
    with runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active")) == 2
    conn = jobs.queue(runtime).connection
    assert {Job.fetch(j, connection=conn).get_status() for j in job_ids} == {JobStatus.FINISHED}
    assert _pii_in(worker.stdout.encode() + worker.stderr.encode()) == []
    # A worker names the server settings a large base needs (none on SQLite).
    advice = server_advice(get_engine(runtime.settings.database_url))
    said = [line for line in worker.stderr.splitlines() if "'PostgreSQL settings'" in line]
    assert len(said) == len(advice) and all(a in line for a, line in zip(advice, said))
    assert backend or advice == []


def test_failing_job_ends_in_failed_registry_without_personal_data(tmp_path, rq_runtime, worker_env, queue_name):
    record_ids, job_ids = _ingest_all(rq_runtime)
    # The worker's database is an empty, never migrated SQLite file (same keys).
    empty_db = tmp_path / "empty.sqlite3"
    worker_env(rq_runtime.settings.instance_path, f"sqlite:///{empty_db}")
    q = jobs.queue(rq_runtime)
    scheduled = ScheduledJobRegistry(queue=q)

    retries = 0
    for _ in range(len(jobs.RETRY_INTERVALS) + 2):
        _burst(rq_runtime, queue_name)
        due = scheduled.get_job_ids()
        if not due:
            break
        # Retries wait 5 s, 30 s, 120 s; rather than sleep, make them due now.
        assert sorted(due) == sorted(job_ids)
        for job_id in due:
            scheduled.requeue(job_id)
        retries += 1

    assert retries == len(jobs.RETRY_INTERVALS)
    failed = FailedJobRegistry(queue=q)
    assert sorted(failed.get_job_ids()) == sorted(job_ids)
    assert set(_statuses(rq_runtime).values()) == {"pending"}  # nothing was resolved
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=q.connection)
        assert job.get_status() == JobStatus.FAILED
        assert job.retries_left == 0
        # The only argument is the list of record ids.
        assert job.kwargs == {}
        assert len(job.args) == 1 and set(job.args[0]) <= set(record_ids)
        result = job.latest_result()
        assert result is not None and result.type == result.Type.FAILED
        assert "no such table" in result.exc_string  # it failed for the reason we set up
        assert _pii_in(result.exc_string.encode("utf-8")) == []
        # And nothing personal anywhere in what Redis keeps for this job.
        raw = q.connection.hgetall(f"rq:job:{job_id}")
        blob = b"\n".join([*raw.values(), zlib.decompress(raw[b"data"])])
        if raw.get(b"exc_info"):
            blob += zlib.decompress(raw[b"exc_info"])
        for _entry_id, fields in q.connection.xrange(f"rq:results:{job_id}"):
            blob += b"\n".join(fields.values())
            if fields.get(b"exc_string"):
                blob += zlib.decompress(base64.b64decode(fields[b"exc_string"]))
        assert _pii_in(blob) == []
