"""The main job: generate → serve each source's own API (or post its webhooks)
→ sync through the connectors → resolve → summarize (and score the clusters
against the generator's truth, followed to each connector's external ids)."""
from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from tqdm import tqdm

from cdp import migrate
from cdp.config import Settings
from cdp.crypto import Keyring
from cdp.models import PENDING_SQL, MergeEvent, Profile, SourceRecord
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
    per_source: dict = field(default_factory=dict)  # configured source -> records it delivered

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        c = self.counts
        return [
            f"records in:   {self.records} ({c['accepted']} accepted, {c['updated']} updated, "
            f"{c['duplicate']} duplicate, {c['rejected']} rejected) from {self.people} people",
            "sources:      " + "  ".join(f"{name} {n}" for name, n in self.per_source.items()),
            f"profiles out: {self.profiles}  merges: {self.merges}  jobs: {self.jobs}",
            f"identity vs truth: precision {self.score['precision']:.4f}  recall {self.score['recall']:.4f}  "
            f"F1 {self.score['f1']:.4f}",
            f"time: {self.seconds:.1f} s ({self.records_per_second:.0f} records/s)",
        ]


def run_demo(settings: Settings, people: int = 1000, seed: int = 42, quiet: bool = False) -> DemoSummary:
    from cdp.auth import create_api_key
    from cdp.demo.connectors import render
    from cdp.demo.dataset import generate
    from cdp.links import iter_links
    from identity.evaluate import pairwise

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    runtime = Runtime(settings, keyring)
    from consent.purposes import seed_defaults

    with runtime.session() as session:
        seed_defaults(session)  # as `cdp init` does: the demo's consent signals need their purposes
    dataset = generate(settings.instance_path / "demo", people=people, seed=seed)
    sources = render(dataset, seed)

    started = time.perf_counter()
    totals = {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    per_source: dict[str, int] = {}
    sources.start()
    app_server = _AppServer(settings, keyring).start()
    try:
        with tqdm(total=sources.records, desc="demo", unit="rec", file=sys.stderr, disable=quiet,
                  mininterval=0.3) as bar:
            for pulled in sources.pulled:
                bar.set_postfix_str(pulled.name)
                counts = _sync(runtime, pulled, bar)
                per_source[pulled.name] = sum(counts.values())
                for k, v in counts.items():
                    totals[k] = totals.get(k, 0) + v
            for name, counts in _deliver(runtime, sources, app_server.url, bar).items():
                per_source[name] = sum(counts.values())
                for k, v in counts.items():
                    totals[k] = totals.get(k, 0) + v
    finally:
        app_server.stop()
        sources.stop()
    jobs = "in-process"
    if settings.redis_url:
        jobs = _wait_for_workers(runtime, quiet)
    seconds = time.perf_counter() - started

    predicted = {(s, e): p for s, e, p in iter_links(runtime)}
    score = pairwise(predicted, sources.truth).as_dict()
    with runtime.session() as session:
        profiles = session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active"))
        merges = session.scalar(select(func.count()).select_from(MergeEvent).where(MergeEvent.kind == "merge"))
        sample = session.scalar(select(Profile.id).where(Profile.status == "active")
                                .order_by(Profile.record_count.desc(), Profile.id).limit(1))
        _key, token = create_api_key(session, "demo", ["ingest", "profiles:read", "profiles:write"])
    from cdp.console.staff import add_staff

    console_login = ("dpo@demo.local", secrets.token_urlsafe(12))  # a fresh password per demo run, printed once
    add_staff(runtime, console_login[0], "dpo", console_login[1])
    return DemoSummary(people=dataset.people, records=sum(totals.values()), counts=totals, profiles=profiles,
                       merges=merges, seconds=seconds, score=score, api_key=token, sample_profile=sample, jobs=jobs,
                       console_login=console_login, per_source=per_source)


def _configure(runtime: Runtime, name: str, type_name: str, config: dict) -> None:
    """`cdp sources add` (or `--update` when the demo runs again on the same database)."""
    from cdp.models import Source
    from cdp.sources import add_source

    with runtime.session() as session:
        row = session.get(Source, name)
        exists = row is not None and row.config is not None
    add_source(runtime, name, type_name, config, update=exists)


def _sync(runtime: Runtime, pulled, bar) -> dict:
    """The same path as `cdp sources sync NAME`: pages, cursors, a batch stored before its cursor moves."""
    from cdp.sources import sync_source

    _configure(runtime, pulled.name, pulled.type, pulled.config)
    result = sync_source(runtime, pulled.name, full=True, trigger="demo", progress=bar.update)
    return result.counts


def _deliver(runtime: Runtime, sources, base_url: str, bar) -> dict[str, dict]:
    """POST every webhook and form to the app's own endpoints, as RD Station,
    Typeform and browsers do; follow each to the external ids its connector
    gives it, for the truth."""
    import requests

    from cdp.demo.connectors import expected_external_ids
    from cdp.sources import build_connector

    for name, type_name, config in sources.webhook_sources:
        _configure(runtime, name, type_name, config)
    receivers = {name: build_connector(runtime, name)[0] for name, _, _ in sources.webhook_sources}
    counts: dict[str, dict] = {name: {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
                               for name in receivers}
    forms = {d.source for d in sources.deliveries if d.path.startswith("/forms/")}
    before = {name: _stored(runtime, name) for name in forms}
    with requests.Session() as http:
        for delivery in sources.deliveries:
            bar.set_postfix_str(delivery.source, refresh=False)
            response = http.post(base_url + delivery.path, data=delivery.body, headers=delivery.headers, timeout=60)
            mine = counts[delivery.source]
            if delivery.source in forms:  # a form answers with a page, not counts: tallied below
                mine["accepted" if response.status_code == 200 else "rejected"] += 1
            elif response.status_code != 200:
                raise RuntimeError(f"demo: webhook to {delivery.source} answered HTTP {response.status_code}")
            else:
                for k, v in response.json()["counts"].items():
                    mine[k] = mine.get(k, 0) + v
            for external_id in expected_external_ids(delivery, receivers[delivery.source]):
                sources.truth[(delivery.source, external_id)] = delivery.entity
            bar.update(1)
    for name in forms:  # the same values sent again the same day are stored once
        new = _stored(runtime, name) - before[name]
        counts[name]["duplicate"] = counts[name]["accepted"] - new
        counts[name]["accepted"] = new
    return counts


def _stored(runtime: Runtime, source: str) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.source == source))


class _AppServer:
    """The app itself on 127.0.0.1 (an ephemeral port, a thread) for the demo's webhooks and forms."""

    def __init__(self, settings: Settings, keyring: Keyring):
        import logging

        from cdp import create_app

        level = logging.getLogger("cdp").level
        self.app = create_app(settings, keyring)
        logging.getLogger("cdp").setLevel(level)  # the app turns INFO on; the CLI's verbosity decides here
        self._server = None

    def start(self) -> "_AppServer":
        import threading

        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, code="-", size="-"):
                pass

        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdp-demo-app", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=30)
            self._server = None


def _pending(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord).where(text(PENDING_SQL)))


def _wait_for_workers(runtime: Runtime, quiet: bool, timeout: float = 1800) -> str:
    """Resolution was queued on rq: wait for the workers. With none running,
    drain the queue here with a burst worker so the demo still finishes."""
    from rq import Worker

    from cdp.jobs import queue, redis_connection

    q = queue(runtime)
    if Worker.count(connection=redis_connection(runtime.settings.redis_url), queue=q) == 0:
        from rq import SimpleWorker

        # rq logs every job at INFO; the demo shows its own progress instead.
        SimpleWorker([q], connection=q.connection, log_job_description=False).work(burst=True, logging_level="WARNING")
        return "rq (burst worker in this process: no `cdp worker` was running)"
    deadline = time.monotonic() + timeout
    with tqdm(total=_pending(runtime), desc="resolve (rq)", unit="rec", file=sys.stderr, disable=quiet) as bar:
        while (left := _pending(runtime)) and time.monotonic() < deadline:
            bar.n = bar.total - left
            bar.refresh()
            time.sleep(0.5)
    return "rq workers"
