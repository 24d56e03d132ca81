"""Configured sources: a connector type, its configuration (secrets
encrypted), per-stream cursors, a schedule, and the sync that reads it.

The sync loop's one rule: a batch is stored (``ingest_batch`` commits)
*before* its cursor is saved. A crash in between re-reads that batch next
time, which ingestion's content hash turns into duplicates; nothing is ever
skipped.

With REDIS_URL, syncs run as rq jobs whose only argument is the source name
(scheduled ones with rq's scheduler, ``enqueue_at``, which ``cdp worker``
runs); without it they run in-process (``cdp sources sync``, and
``cdp sources run-due`` from the system cron for schedules).
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from cdp import crypto
from cdp.connectors import ConnectorError, SourceConnector, redact, split_secrets
from cdp.models import Source, utcnow
from cdp.store import Runtime
from cdp.sync_models import SyncRun

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
LEASE = timedelta(minutes=60)  # a sync that stored nothing for this long is presumed dead
SYNC_JOB_TIMEOUT = 6 * 3600


class SourceNotFound(ConnectorError):
    pass


class SyncBusy(ConnectorError):
    """Another sync of the same source is running."""


class SyncFailed(ConnectorError):
    """A sync stopped on an unexpected error; the message names its type and place only."""


# -- configuration -------------------------------------------------------------------------


def _aad_args(name: str) -> tuple[str, str, str]:
    return "sources", name, "secrets"


# Configured connectors (sources here, destinations in activation.destinations) keep their secret
# fields as one ciphertext under the row's own data key, AAD (table, name, "secrets").

def seal_secrets(keys, key_id: str | None, secrets: Mapping, table: str, name: str) -> tuple[str | None, bytes | None]:
    """(key_id, ciphertext) of a connector's secret fields; (key_id, None) when there are none."""
    if not secrets:
        return key_id, None
    if key_id is None:
        key_id, dek = keys.create()
    else:
        dek = keys.get(key_id)
    return key_id, crypto.encrypt_json(dek, dict(secrets), table, name, "secrets")


def open_secrets(keys, key_id: str | None, ciphertext: bytes | None, table: str, name: str) -> dict:
    if ciphertext is None:
        return {}
    return crypto.decrypt_json(keys.get(key_id), ciphertext, table, name, "secrets")


def add_source(runtime: Runtime, name: str, type_name: str | None, config: Mapping, *, trust: int | None = None,
               update: bool = False) -> Source:
    """Create (or with `update`, change) a configured source. The connector's
    schema validates the whole configuration (ConfigInvalid names the field);
    secret fields are stored encrypted under the source's own data key."""
    from cdp.plugins import source_type

    if not NAME_RE.match(name or ""):
        raise ConnectorError("source name must be snake_case (a-z, 0-9, _), up to 64 characters")
    with runtime.session() as session:
        keys = runtime.keys(session)
        source = session.get(Source, name)
        if source is not None and source.config is not None and not update:
            raise ConnectorError(f"source {name} already exists; change it with --update")
        if update and (source is None or source.config is None):
            raise SourceNotFound(f"no configured source {name}")
        if update:
            if type_name and type_name != source.plugin:
                raise ConnectorError(f"source {name} is of type {source.plugin}; its type cannot change")
            type_name = source.plugin
            merged = {**_stored_config(keys, source), **config}
        else:
            merged = dict(config)
        if not type_name:
            raise ConnectorError("--type is required")
        cls = source_type(type_name)
        cls.validate_config(merged)
        try:
            json.dumps(merged)
        except (TypeError, ValueError):
            raise ConnectorError(f"{type_name}: configuration values must be strings, numbers, booleans, "
                                 "lists or mappings") from None
        plain, secrets = split_secrets(cls.config_schema, merged)
        if source is None:
            source = Source(name=name, plugin=type_name, trust=50 if trust is None else trust)
            session.add(source)
        elif source.config is None:
            source.plugin = type_name  # an API source becoming a configured one
        if trust is not None:
            source.trust = trust
        source.config = plain
        source.secrets_key_id, source.secrets_ct = seal_secrets(keys, source.secrets_key_id, secrets, "sources", name)
        session.flush()
        return source


def _stored_config(keys, source: Source) -> dict:
    return {**(source.config or {}), **open_secrets(keys, source.secrets_key_id, source.secrets_ct, "sources",
                                                     source.name)}


def _configured(session, name: str) -> Source:
    source = session.get(Source, name)
    if source is None:
        raise SourceNotFound(f"no source {name} (see `cdp sources list`)")
    if source.config is None:
        raise SourceNotFound(f"source {name} is not configured: it receives records through the API "
                             "(configure a connector with `cdp sources add`)")
    return source


def build_connector(runtime: Runtime, name: str) -> tuple[SourceConnector, Source]:
    """The configured source's connector, ready to use (secrets decrypted in memory only)."""
    from cdp.plugins import source_type

    with runtime.session() as session:
        source = _configured(session, name)
        config = _stored_config(runtime.keys(session), source)
        session.expunge(source)
    connector = source_type(source.plugin)(config, source=name)
    connector.config_saver = lambda changes: save_config(runtime, name, changes)
    return connector, source


def save_config(runtime: Runtime, name: str, changes: Mapping) -> None:
    """Write configuration values a connector changed (SourceConnector.save_config)
    into the configured source: merged, validated, secrets re-encrypted, committed."""
    add_source(runtime, name, None, changes, update=True)
    log.info("source=%s configuration updated by its connector (keys: %s)", name, ", ".join(sorted(changes)))


def check_source(runtime: Runtime, name: str) -> SourceConnector:
    connector, _ = build_connector(runtime, name)
    connector.check()
    return connector


def describe_source(runtime: Runtime, source: Source) -> dict:
    """What operators and the API may see: plain configuration, and the
    *names* of the secrets that are set (never their values)."""
    secrets: list[str] = []
    if source.secrets_ct is not None:
        with runtime.session() as session:
            stored = crypto.decrypt_json(runtime.keys(session).get(source.secrets_key_id), source.secrets_ct,
                                         *_aad_args(source.name))
        secrets = sorted(stored)
    return {
        "name": source.name,
        "type": source.plugin,
        "configured": source.config is not None,
        "trust": source.trust,
        "config": dict(source.config or {}),
        "secrets": secrets,
        "schedule": source.schedule,
        "cursors": source.cursor or {},
        "last_sync_at": source.last_sync_at.isoformat() if source.last_sync_at else None,
        "last_sync_status": source.last_sync_status,
    }


def list_sources(runtime: Runtime) -> list[Source]:
    with runtime.session() as session:
        rows = session.scalars(select(Source).order_by(Source.name)).all()
        for row in rows:
            session.expunge(row)
    return list(rows)


# -- sync ----------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    run_id: int
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    error: str | None = None


def sync_source(runtime: Runtime, name: str, *, stream: str | None = None, full: bool = False,
                batch_size: int = 500, trigger: str = "cli", job_id: str | None = None,
                progress: Callable[[int], None] | None = None) -> SyncResult:
    """Read a configured source from its saved cursors (from the start with
    `full`) and ingest batch by batch: each batch is committed, then its
    cursor is saved. Raises SyncBusy when another sync of the source runs."""
    run_id = _start(runtime, name, stream, full, trigger, job_id)
    counts = {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    batches = 0
    secrets: list[str] = []
    try:
        connector, source = build_connector(runtime, name)
        secrets = connector.secret_values()
        available = connector.streams()
        if stream and stream not in available:
            raise ConnectorError(f"{connector.name}: no stream {stream!r} (streams: {', '.join(available)})")
        for current in [stream] if stream else available:
            cursor = None if full else (source.cursor or {}).get(current)
            for batch in connector.read(current, cursor, batch_size):
                batch_counts = _ingest(runtime, name, source.plugin, batch.records, connector)
                batch_counts["rejected"] += len(batch.errors)
                for where, errors in batch.errors:
                    log.info("sync source=%s stream=%s rejected %s fields=%s", name, current, where, sorted(errors))
                # Only now that the batch is committed does the cursor move past it.
                _advance(runtime, name, run_id, current, batch.cursor, batch_counts)
                batches += 1
                for key, value in batch_counts.items():
                    counts[key] += value
                if progress:
                    progress(len(batch.records) + len(batch.errors))
    except BaseException as exc:
        text = error_text(exc, secrets)
        _finish(runtime, name, run_id, "failed", text)
        log.warning("sync source=%s run=%d failed: %s", name, run_id, text)
        if isinstance(exc, (ConnectorError, KeyboardInterrupt, SystemExit)):
            raise
        raise SyncFailed(text) from None
    _finish(runtime, name, run_id, "ok")
    log.info("sync source=%s run=%d ok batches=%d counts=%s", name, run_id, batches, counts)
    return SyncResult(run_id, "ok", counts, batches)


def _ingest(runtime: Runtime, name: str, plugin: str, records: list[dict], connector) -> dict[str, int]:
    from cdp.ingest import ingest_batch

    if not records:
        return {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    for attempt in range(3):
        try:
            summary = ingest_batch(runtime, name, records, plugin=plugin,
                                   custom_kinds=getattr(connector, "custom_kinds", None))
            return summary.counts()
        except IntegrityError:
            # A webhook stored one of these records at the same moment: store again against it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start(runtime: Runtime, name: str, stream, full, trigger, job_id) -> int:
    now = utcnow()
    with runtime.session() as session:
        _configured(session, name)
        claimed = session.execute(
            update(Source)
            .where(Source.name == name, or_(Source.sync_started_at.is_(None), Source.sync_started_at < now - LEASE))
            .values(sync_started_at=now, last_sync_status="running")
        ).rowcount
        if not claimed:
            raise SyncBusy(f"a sync of {name} is already running; try again when it ends")
        run = SyncRun(source=name, stream=stream, full=full, trigger=trigger, job_id=job_id, status="running",
                      started_at=now)
        session.add(run)
        session.flush()
        return run.id


def _advance(runtime: Runtime, name: str, run_id: int, stream: str, cursor: Any, counts: dict) -> None:
    try:
        json.dumps(cursor)
    except (TypeError, ValueError):
        raise ConnectorError(f"stream {stream}: the connector's cursor is not JSON-serializable") from None
    with runtime.session() as session:
        source = session.get(Source, name)
        source.cursor = {**(source.cursor or {}), stream: cursor}  # a new dict, so the JSON column is written
        source.sync_started_at = utcnow()  # still alive
        run = session.get(SyncRun, run_id)
        run.batches += 1
        for key, value in counts.items():
            setattr(run, key, getattr(run, key) + value)


def _finish(runtime: Runtime, name: str, run_id: int, status: str, error: str | None = None) -> None:
    now = utcnow()
    with runtime.session() as session:
        run = session.get(SyncRun, run_id)
        run.status, run.finished_at, run.error = status, now, error
        source = session.get(Source, name)
        source.last_sync_status, source.last_sync_at, source.sync_started_at = status, now, None


def error_text(exc: BaseException, secrets=()) -> str:
    """What may be stored and shown about a failure: a ConnectorError's own
    message (connectors promise it holds nothing personal), otherwise only
    the exception type and where it happened (its message might)."""
    if isinstance(exc, ConnectorError):
        text = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(exc, (OperationalError, ProgrammingError)):
        text = f"database error ({type(getattr(exc, 'orig', exc)).__name__})"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        text = f"unexpected {type(exc).__name__}{where}"
    return redact(text, secrets)[:1000]


def sync_runs(runtime: Runtime, name: str, limit: int = 20) -> list[SyncRun]:
    with runtime.session() as session:
        rows = session.scalars(select(SyncRun).where(SyncRun.source == name)
                               .order_by(SyncRun.id.desc()).limit(limit)).all()
        for row in rows:
            session.expunge(row)
    return list(rows)


# -- webhooks ------------------------------------------------------------------------------------


def ingest_delivery(runtime: Runtime, name: str, body: bytes, headers: Mapping[str, str]):
    """A webhook (or form) delivery: the connector verifies and maps it
    (WebhookError otherwise); records go through ingest_batch, so a repeated
    delivery is stored once (duplicates by content hash)."""
    from cdp.ingest import IngestSummary, ingest_batch

    connector, source = build_connector(runtime, name)
    records = connector.handle_webhook(body, headers)
    if not records:
        return connector, IngestSummary([], [], [])
    for attempt in range(3):
        try:
            return connector, ingest_batch(runtime, name, records, plugin=source.plugin,
                                           custom_kinds=getattr(connector, "custom_kinds", None))
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# -- schedules -----------------------------------------------------------------------------------

_EVERY = re.compile(r"^\s*(\d+)\s*(m|min|h|d)?\s*$")


def parse_every(text: str) -> int:
    """"90", "90m", "2h", "1d" → minutes (at least 1)."""
    match = _EVERY.match(text or "")
    if not match or int(match.group(1)) < 1:
        raise ConnectorError("--every must be a number of minutes, or e.g. 30m, 2h, 1d")
    return int(match.group(1)) * {"m": 1, "min": 1, None: 1, "h": 60, "d": 1440}[match.group(2)]


def next_run_at(schedule: dict, after: datetime) -> datetime:
    if schedule.get("cron"):
        from croniter import croniter

        # Cron fields read in UTC, whatever the server's zone.
        return croniter(schedule["cron"], after.astimezone(timezone.utc)).get_next(datetime)
    return after + timedelta(minutes=int(schedule["every_minutes"]))


def set_schedule(runtime: Runtime, name: str, *, every_minutes: int | None = None, cron: str | None = None) -> dict | None:
    """Store the schedule (None: unscheduled) and, with Redis, (re)arm its rq job."""
    schedule = None
    if cron:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConnectorError("--cron is not a valid cron expression (minute hour day month weekday)")
        schedule = {"cron": cron}
    elif every_minutes:
        schedule = {"every_minutes": int(every_minutes)}
    with runtime.session() as session:
        source = _configured(session, name)
        source.schedule = schedule
        old_job = source.schedule_job_id
        source.schedule_job_id = None
    if runtime.settings.redis_url:
        _cancel(runtime, old_job)
        if schedule:
            arm(runtime, name)
    return schedule


def _cancel(runtime: Runtime, job_id: str | None) -> None:
    if not job_id:
        return
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from cdp import jobs

    try:
        Job.fetch(job_id, connection=jobs.redis_connection(runtime.settings.redis_url)).delete()
    except NoSuchJobError:
        pass


def arm(runtime: Runtime, name: str, after: datetime | None = None, queue=None) -> str | None:
    """Queue the next scheduled sync of `name` with rq's scheduler (at its
    next due time) and remember its job id; the job re-arms itself (on the
    queue it came from, `queue`)."""
    from cdp import jobs

    with runtime.session() as session:
        source = _configured(session, name)
        if not source.schedule:
            return None
        when = next_run_at(source.schedule, after or utcnow())
        job = (queue or jobs.queue(runtime)).enqueue_at(
            when, scheduled_sync_job, name, description=f"scheduled sync of {name}", job_timeout=SYNC_JOB_TIMEOUT,
            failure_ttl=7 * 86400)
        source.schedule_job_id = job.id
    log.info("scheduled sync source=%s at=%s job=%s", name, when.isoformat(), job.id)
    return job.id


def due_sources(runtime: Runtime, now: datetime | None = None) -> list[str]:
    """Scheduled sources whose next run (after their last sync) is due."""
    now = now or utcnow()
    due = []
    for source in list_sources(runtime):
        if source.schedule and source.config is not None:
            if source.last_sync_at is None or next_run_at(source.schedule, source.last_sync_at) <= now:
                due.append(source.name)
    return due


# -- rq jobs (argument: the source name; results: counts) ----------------------------------------


def _job_result(result: SyncResult) -> dict:
    return {"run": result.run_id, "status": result.status, "batches": result.batches, **result.counts}


def sync_job(name: str, stream: str | None = None, full: bool = False) -> dict:
    """A sync queued by `cdp sources sync` (REDIS_URL set)."""
    from rq import get_current_job

    from cdp.jobs import _worker_runtime

    job = get_current_job()
    try:
        return _job_result(sync_source(_worker_runtime(), name, stream=stream, full=full, trigger="queue",
                                       job_id=job.id if job else None))
    except ConnectorError as exc:
        raise SyncFailed(str(exc)) from None  # no chained traceback text in what Redis keeps


def scheduled_sync_job(name: str) -> dict:
    """A scheduled sync: it first queues the next one (so a failure keeps the
    schedule), unless the schedule changed since it was queued."""
    from rq import get_current_job

    from cdp.jobs import _worker_runtime

    runtime = _worker_runtime()
    job = get_current_job()
    with runtime.session() as session:
        source = session.get(Source, name)
        current = source is not None and source.schedule and source.schedule_job_id == (job.id if job else None)
    if not current:
        return {"status": "superseded"}
    from rq import Queue

    arm(runtime, name, queue=Queue(job.origin, connection=job.connection))
    try:
        return _job_result(sync_source(runtime, name, trigger="schedule", job_id=job.id if job else None))
    except ConnectorError as exc:
        raise SyncFailed(str(exc)) from None


def enqueue_sync(runtime: Runtime, name: str, stream: str | None = None, full: bool = False) -> str:
    from cdp import jobs

    with runtime.session() as session:
        _configured(session, name)
    kwargs = {}
    if stream:
        kwargs["stream"] = stream
    if full:
        kwargs["full"] = True
    job = jobs.queue(runtime).enqueue(sync_job, args=(name,), kwargs=kwargs, description=f"sync of {name}",
                                      job_timeout=SYNC_JOB_TIMEOUT, failure_ttl=7 * 86400)
    return job.id
