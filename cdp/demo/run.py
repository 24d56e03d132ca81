"""The main job: generate → ingest through the file connector → resolve →
summarize (and score the clusters against the generator's truth)."""
from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from tqdm import tqdm

from cdp import migrate
from cdp.config import Settings
from cdp.crypto import Keyring
from cdp.models import MergeEvent, Profile, SourceRecord
from cdp.store import Runtime


@dataclass
class DemoSummary:
    people: int
    records: int
    counts: dict
    profiles: int
    merges: int
    seconds: float
    score: dict
    api_key: str
    sample_profile: str | None
    jobs: str = "in-process"
    extra: dict = field(default_factory=dict)
    console_login: tuple[str, str] | None = None  # (e-mail, password) of the demo DPO console user

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        c = self.counts
        return [
            f"records in:   {self.records} ({c['accepted']} accepted, {c['updated']} updated, "
            f"{c['duplicate']} duplicate, {c['rejected']} rejected) from {self.people} people",
            f"profiles out: {self.profiles}  merges: {self.merges}  jobs: {self.jobs}",
            f"identity vs truth: precision {self.score['precision']:.4f}  recall {self.score['recall']:.4f}  "
            f"F1 {self.score['f1']:.4f}",
            f"time: {self.seconds:.1f} s ({self.records_per_second:.0f} records/s)",
        ]


def run_demo(settings: Settings, people: int = 1000, seed: int = 42, quiet: bool = False) -> DemoSummary:
    from cdp.auth import create_api_key
    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from cdp.links import iter_links
    from identity.evaluate import pairwise, read_truth
    from plugins.file_source import FileSource

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    runtime = Runtime(settings, keyring)
    from consent.purposes import seed_defaults

    with runtime.session() as session:
        seed_defaults(session)  # as `cdp init` does: the demo's consent signals need their purposes
    dataset = generate(settings.instance_path / "demo", people=people, seed=seed)

    started = time.perf_counter()
    totals = {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    with tqdm(total=dataset.records, desc="demo", unit="rec", file=sys.stderr, disable=quiet, mininterval=0.3) as bar:
        for data_path, mapping_path in dataset.files:
            config = {"path": str(data_path)}
            if mapping_path:
                config["mapping"] = str(mapping_path)
            bar.set_postfix_str(data_path.name)
            counts = ingest_connector(runtime, FileSource(config), bar=bar, quiet=True)
            for k, v in counts.items():
                totals[k] += v
    jobs = "in-process"
    if settings.redis_url:
        jobs = _wait_for_workers(runtime, quiet)
    seconds = time.perf_counter() - started

    predicted = {(s, e): p for s, e, p in iter_links(runtime)}
    score = pairwise(predicted, read_truth(dataset.truth_path)).as_dict()
    with runtime.session() as session:
        profiles = session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active"))
        merges = session.scalar(select(func.count()).select_from(MergeEvent).where(MergeEvent.kind == "merge"))
        sample = session.scalar(select(Profile.id).where(Profile.status == "active")
                                .order_by(Profile.record_count.desc(), Profile.id).limit(1))
        _key, token = create_api_key(session, "demo", ["ingest", "profiles:read", "profiles:write"])
    from cdp.console.staff import add_staff

    console_login = ("dpo@demo.local", secrets.token_urlsafe(12))  # a fresh password per demo run, printed once
    add_staff(runtime, console_login[0], "dpo", console_login[1])
    return DemoSummary(people=dataset.people, records=dataset.records, counts=totals, profiles=profiles,
                       merges=merges, seconds=seconds, score=score, api_key=token, sample_profile=sample, jobs=jobs,
                       console_login=console_login)


def _pending(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.status == "pending"))


def _wait_for_workers(runtime: Runtime, quiet: bool, timeout: float = 1800) -> str:
    """Resolution was queued on rq: wait for the workers. With none running,
    drain the queue here with a burst worker so the demo still finishes."""
    from rq import Worker

    from cdp.jobs import queue, redis_connection

    q = queue(runtime)
    if Worker.count(connection=redis_connection(runtime.settings.redis_url), queue=q) == 0:
        from rq import SimpleWorker

        SimpleWorker([q], connection=q.connection, log_job_description=False).work(burst=True)
        return "rq (burst worker in this process: no `cdp worker` was running)"
    deadline = time.monotonic() + timeout
    with tqdm(total=_pending(runtime), desc="resolve (rq)", unit="rec", file=sys.stderr, disable=quiet) as bar:
        while (left := _pending(runtime)) and time.monotonic() < deadline:
            bar.n = bar.total - left
            bar.refresh()
            time.sleep(0.5)
    return "rq workers"
