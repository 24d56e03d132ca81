"""With REDIS_URL, resolution runs on an rq worker: consent signals reach the
ledger there too, and the job payload carries record ids only."""
from __future__ import annotations

import pickle
import zlib

from sqlalchemy import select

from cdp.ingest import ingest_batch
from consent.models import LedgerEntry
from consent.purposes import seed_defaults
from tests.factories import record
from tests.services.test_rq import _burst, queue_name, rq_runtime, worker_env  # noqa: F401 - fixtures

IP = "170.84.33.21"
SIGNAL = {"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
          "evidence": {"channel": "web_form", "notice_version": "aviso-2026-01", "ip": IP}}


def test_worker_appends_consent_signals_once(rq_runtime, worker_env):
    with rq_runtime.session() as session:
        seed_defaults(session)
    worker_env(rq_runtime.settings.instance_path)
    summary = ingest_batch(rq_runtime, "formularios", [record("W-1", email="wal@example.com", consents=[SIGNAL])])
    assert summary.job_ids
    from rq.job import Job

    from cdp import jobs

    conn = jobs.queue(rq_runtime).connection
    for job_id in summary.job_ids:
        raw = conn.hget(f"rq:job:{job_id}", "data")
        assert IP.encode() not in zlib.decompress(raw) and IP not in repr(pickle.loads(zlib.decompress(raw)))
        assert Job.fetch(job_id, connection=conn).args == (summary.record_ids,)
    with rq_runtime.session() as session:
        assert session.scalars(select(LedgerEntry)).all() == []  # nothing before the worker runs
    _burst(rq_runtime, "consent")
    with rq_runtime.session() as session:
        entries = session.scalars(select(LedgerEntry)).all()
    assert [(e.purpose, e.action, e.record_id) for e in entries] == [("email_marketing", "granted", summary.record_ids[0])]
