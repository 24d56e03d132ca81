"""Activation on a real Redis with a real rq worker: a run is a job whose
payload is the run id; a failing destination is retried (the HTTP kit's
backoff), lands in the failure registry with the reason, and once it
recovers a re-drive (a job carrying delivery ids) delivers exactly once —
the receiver counts idempotency keys. Nothing personal in Redis or logs."""
from __future__ import annotations

import logging
import pickle
import zlib

import pytest
from rq.job import Job, JobStatus

from activation.destinations import add_destination
from activation.run_models import Delivery
from activation.runs import create_activation, failures, list_runs, retry, submit_run
from cdp import http as cdp_http
from cdp import jobs
from sqlalchemy import select

from cdp.disclosures import Disclosure
from tests.activation.fakes import WEBHOOK_SECRET, WebhookReceiver
from tests.activation.fixtures import NOW, PEOPLE
from tests.activation.test_members_gate import EVERYONE
from tests.consent.helpers import grant
from tests.services.test_rq import _burst, queue_name, rq_runtime, worker_env  # noqa: F401 - fixtures

PII = [f"p{i}@exemplo.com.br" for i in range(1, 7)] + [f"Pessoa p{i}" for i in range(1, 7)]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=2, backoff=0.01, retry_after_max=1))


def _redis_blob(conn, job_id: str) -> bytes:
    raw = conn.hgetall(f"rq:job:{job_id}")
    blob = b"\n".join([*raw.keys(), *raw.values(), zlib.decompress(raw[b"data"])])
    if raw.get(b"exc_info"):
        blob += zlib.decompress(raw[b"exc_info"])
    for _entry, fields in conn.xrange(f"rq:results:{job_id}"):
        blob += b"\n".join(fields.values())
    return blob


def _setup_on_worker(rt) -> tuple[dict[str, str], int]:
    """tests.activation.test_members_gate._setup, with resolution done by the worker first."""
    from activation.metrics import refresh_all
    from activation.segments import create_segment, refresh_members
    from cdp.models import SourceRecord
    from consent.purposes import seed_defaults

    from cdp.ingest import ingest_batch
    from tests.factories import record

    summary = ingest_batch(rt, "loja", [record(external_id=name, email=f"{name}@exemplo.com.br", name=f"Pessoa {name}",
                                               events=events) for name, events in PEOPLE.items()])
    _burst(rt, "resolve")
    with rt.session() as s:
        people = {name: s.scalar(select(SourceRecord.profile_id).where(SourceRecord.id == result.record_id))
                  for name, result in zip(PEOPLE, summary.results)}
        assert all(people.values())
        seed_defaults(s)
    refresh_all(rt, churn_days=180, now=NOW)
    for name in ("p1", "p2", "p4", "p6"):
        grant(rt, people[name])
    with rt.session() as s:
        seg = create_segment(s, "todos", EVERYONE)
        refresh_members(s, seg, now=NOW)
    return people, seg.id


def _no_pii(blob: bytes) -> None:
    assert [p for p in PII if p.encode() in blob] == []


def test_failing_destination_lands_in_the_registry_and_retry_delivers_once(rq_runtime, worker_env, caplog):
    caplog.set_level(logging.DEBUG)
    rt = rq_runtime
    worker_env(rt.settings.instance_path)
    people, sid = _setup_on_worker(rt)
    with WebhookReceiver() as receiver:
        with rt.session() as s:
            add_destination(s, rt.keys(s), "crm_hook", "webhook", receiver.config())
            aid = create_activation(s, "crm", sid, "crm_hook", "email_marketing", ["email", "full_name"],
                                    batch_size=3).id
        receiver.mode = "down"
        queued = submit_run(rt, aid, trigger="api")
        conn = jobs.queue(rt).connection
        job = Job.fetch(queued["job_id"], connection=conn)
        assert job.args == (queued["run_id"],) and job.kwargs == {}
        _no_pii(_redis_blob(conn, job.id))
        assert receiver.key_hits == {}  # nothing before the worker

        _burst(rt, "activation")
        assert Job.fetch(job.id, connection=conn).get_status() == JobStatus.FINISHED
        with rt.session() as s:
            registry = failures(s, aid)
            (run,) = list_runs(s, aid)
        assert run["status"] == "failed" and run["failed"] == 4 and run["sent"] == 0
        assert len(registry) == 2  # batches of 3 + 1
        for failure in registry:
            assert failure["attempts"] == 1
            assert receiver.key_hits[failure["idempotency_key"]] == 3  # the kit retried with backoff
            assert failure["last_error"].startswith("webhook: 127.0.0.1 answered HTTP 503 to POST /hooks/cdp "
                                                    "after 3 attempt(s)")
        assert receiver.applied == {}

        # Consent revoked while the delivery waits in the registry: that subject is not sent on retry.
        grant(rt, people["p6"], action="revoked")
        receiver.mode = "up"
        redrive = retry(rt, activation_id=aid)
        job2 = Job.fetch(redrive["job_id"], connection=conn)
        assert job2.args == (sorted(f["id"] for f in registry),)
        _burst(rt, "activation-retry")
        assert Job.fetch(job2.id, connection=conn).get_status() == JobStatus.FINISHED
        with rt.session() as s:
            others = {d.idempotency_key: set(d.profile_ids) - {people["p6"]} for d in s.scalars(select(Delivery))}
        for failure in registry:
            # One more attempt each (a batch left with nobody after the revocation is not sent at all)...
            assert receiver.key_hits[failure["idempotency_key"]] == (4 if others[failure["idempotency_key"]] else 3)
        assert len(receiver.applied) == sum(1 for o in others.values() if o)  # ...each key applied once
        assert sorted(receiver.upserts) == sorted(people[n] for n in ("p1", "p2", "p4"))
        assert set(receiver.upserts.values()) == {1}

        # Re-driving again changes nothing: the registry is empty.
        assert retry(rt, activation_id=aid)["retried"] == 0
        with rt.session() as s:
            assert failures(s) == []
            (run,) = list_runs(s, aid)
            disclosed = s.scalars(select(Disclosure.profile_id).where(Disclosure.recipient_type == "destination"))
            assert sorted(disclosed) == sorted(people[n] for n in ("p1", "p2", "p4"))
        assert run["status"] == "ok" and run["added"] == 3

        # p6 was in a batch an earlier attempt may have delivered (the platform cannot know the 503s
        # applied nothing), so it is kept as possibly present and the next run sends a removal for it.
        nxt = submit_run(rt, aid)
        _burst(rt, "activation-2")
        with rt.session() as s:
            latest = list_runs(s, aid)[0]
            assert people["p6"] not in set(s.scalars(select(Disclosure.profile_id)))
        assert latest["id"] == nxt["run_id"] and (latest["added"], latest["removed"]) == (0, 1)
        (removal,) = [v for v in receiver.applied.values() if v["type"] == "remove"]
        assert removal["refs"] == [people["p6"]] and people["p6"] not in receiver.state

        for job_id in (job.id, job2.id, nxt["job_id"]):
            _no_pii(_redis_blob(conn, job_id))
            data = zlib.decompress(conn.hget(f"rq:job:{job_id}", "data"))
            assert WEBHOOK_SECRET.encode() not in data
            _func, _inst, args, kwargs = pickle.loads(data)
            assert kwargs == {} and all(isinstance(a, (int, list)) for a in args)
    text = caplog.text + repr([r.args for r in caplog.records])
    assert [p for p in PII if p in text] == [] and WEBHOOK_SECRET not in text


def test_a_scheduled_activation_runs_on_the_worker_and_rearms(rq_runtime, worker_env):
    from rq.registry import ScheduledJobRegistry

    from activation.run_models import Activation
    from activation.runs import arm

    rt = rq_runtime
    worker_env(rt.settings.instance_path)
    people, sid = _setup_on_worker(rt)
    with WebhookReceiver() as receiver:
        with rt.session() as s:
            add_destination(s, rt.keys(s), "crm_hook", "webhook", receiver.config())
            aid = create_activation(s, "crm", sid, "crm_hook", "email_marketing", ["email"],
                                    schedule={"every_minutes": 30}).id
        first = arm(rt, aid)
        q = jobs.queue(rt)
        scheduled = ScheduledJobRegistry(queue=q)
        assert scheduled.get_job_ids() == [first]
        job = Job.fetch(first, connection=q.connection)
        assert job.args == (aid,) and job.func_name == "activation.runs.scheduled_run_job"
        scheduled.requeue(first)  # due now, rather than in 30 minutes
        _burst(rt, "scheduled")
        assert Job.fetch(first, connection=q.connection).get_status() == JobStatus.FINISHED
        with rt.session() as s:
            (run,) = list_runs(s, aid)
            nxt = s.get(Activation, aid).schedule_job_id
        assert run["trigger"] == "schedule" and run["added"] == 4 and len(receiver.state) == 4
        assert nxt != first and scheduled.get_job_ids() == [nxt]  # re-armed
        with rt.session() as s:
            s.get(Activation, aid).schedule_job_id = None  # the schedule changed: that job is superseded
        scheduled.requeue(nxt)
        _burst(rt, "scheduled-2")
        assert Job.fetch(nxt, connection=q.connection).return_value() == {"status": "superseded"}
        _no_pii(_redis_blob(q.connection, first))
