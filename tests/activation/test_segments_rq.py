"""With REDIS_URL, metrics are recomputed inside the resolution job and a
segment refresh is an rq job whose payload is the segment id only."""
from __future__ import annotations

from rq.job import Job

from activation.models import ProfileMetrics, SegmentMember
from activation.segments import create_segment, submit_refresh
from cdp import jobs
from cdp.ingest import ingest_batch
from sqlalchemy import func, select
from tests.factories import record
from tests.services.test_rq import _burst, queue_name, rq_runtime, worker_env  # noqa: F401 - fixtures


def test_metrics_and_segment_refresh_run_on_the_worker(rq_runtime, worker_env):
    worker_env(rq_runtime.settings.instance_path)
    ingest_batch(rq_runtime, "loja", [record("A", email="a@exemplo.com.br", events=[
        {"type": "purchase", "occurred_at": "2026-01-01T00:00:00Z", "amount": "12.50"}])])
    with rq_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(ProfileMetrics)) == 0  # not before the worker
    _burst(rq_runtime, "metrics")
    with rq_runtime.session() as s:
        assert s.scalars(select(ProfileMetrics.monetary_total)).one() == 12.5
        seg = create_segment(s, "compradores", {"metric": "purchase_count", "op": "gte", "value": 1})
    queued = submit_refresh(rq_runtime, seg.id)
    job = Job.fetch(queued["job_id"], connection=jobs.queue(rq_runtime).connection)
    assert job.args == (seg.id,)
    _burst(rq_runtime, "segments")
    with rq_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(SegmentMember)) == 1
