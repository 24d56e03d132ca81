"""Activations: a segment sent to a destination for one purpose, run by run.

A run **plans** then **delivers**:

* plan (one transaction): the members `activation.access.gated_members`
  lets through for the activation's purpose (the single consent gate; the
  segment's holdout is applied there), minus the activation's own holdout
  group, compared with what the destination has (`activation_members`):
  *adds* are allowed members it does not have, *removes* are subjects it
  has that left the segment, lost consent or fell into a holdout. Subjects
  of a delivery not finished yet (pending, sending, failed) are left out, so
  no subject is ever in two open deliveries. Each batch becomes a delivery
  row (profile ids only) with an idempotency key derived from the
  activation, the run, the batch ordinal and a hash of its content.
* deliver (per batch): consent is checked again, rows are decrypted and
  handed to the connector with the key; only after the destination
  acknowledged is the delivery marked done, the state updated and the
  disclosure log written, in one transaction. A crash between the
  acknowledgement and that commit leaves the delivery "sending"; sending it
  again carries the same key, which the destination de-duplicates (a
  webhook receiver by the Idempotency-Key header; a list's PUT/DELETE by
  nature), so nothing is lost and nothing is applied twice.

Retries: one layer, the HTTP kit's (urllib3 Retry: exponential backoff,
Retry-After honoured) inside each attempt. A delivery still failing after
them goes to the failure registry (status "failed", the reason in
`last_error`, a suggested `next_retry_at`); `retry` re-drives it with the
same key. rq jobs are not retried by rq (that would be a second layer).

With REDIS_URL, runs and re-drives are rq jobs whose payload is a run id or
delivery ids; without it they run in-process.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Callable, Iterable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from activation.access import FIELDS, gated_members, member_rows
from activation.destinations import ActivationError, build_destination, destination_class, find_destination
from activation.models import ProfileMetrics, Segment, SegmentMember
from activation.run_models import Activation, ActivationMember, ActivationRun, Delivery, Destination
from cdp import crypto
from cdp.disclosures import Recipient, record_disclosures
from cdp.models import Profile, utcnow
from cdp.sources import error_text
from cdp.store import KeyStore, Runtime

log = logging.getLogger(__name__)

OPEN = ("pending", "sending", "failed")  # deliveries whose subjects are still in flight
SENDING_LEASE = timedelta(minutes=30)  # a delivery "sending" this long is presumed crashed
REDRIVE_BACKOFF = timedelta(minutes=15)  # suggested wait before re-driving a failed delivery, doubled per attempt
RUN_JOB_TIMEOUT = 6 * 3600


# -- configuration ---------------------------------------------------------------------------


def create_activation(session: Session, name: str, segment: str | int, destination: str | int, purpose: str,
                      fields: list[str], holdout_pct: int = 0, batch_size: int = 500, schedule: dict | None = None,
                      actor: str = "system") -> Activation:
    from consent.models import Purpose

    if not name or len(name) > 100:
        raise ActivationError("name", "1 to 100 characters")
    if session.scalar(select(Activation.id).where(Activation.name == name)) is not None:
        raise ActivationError("name", "an activation with this name exists", 409)
    seg = _find_segment(session, segment)
    dest = find_destination(session, destination)
    if session.scalar(select(Purpose.name).where(Purpose.name == purpose, Purpose.active.is_(True))) is None:
        raise ActivationError("purpose", "not an active purpose (cdp purposes list)")
    fields = list(dict.fromkeys(f for f in fields or [] if f != "profile_id"))
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ActivationError("fields", f"unknown field(s) {', '.join(unknown)}; choose from {', '.join(FIELDS)}")
    cls = destination_class(dest)
    needed = [f for f in (*cls.required_fields, cls.ref_field) if f != "profile_id" and f not in fields]
    if needed:
        raise ActivationError("fields", f"destination type {cls.name} needs {', '.join(dict.fromkeys(needed))}")
    if not 0 <= holdout_pct <= 50:
        raise ActivationError("holdout_pct", "must be between 0 and 50")
    if not 1 <= batch_size <= 10_000:
        raise ActivationError("batch_size", "must be between 1 and 10000")
    if schedule is not None:
        _check_schedule(schedule)
    activation = Activation(name=name, segment_id=seg.id, destination_id=dest.id, purpose=purpose, fields=fields,
                            holdout_pct=holdout_pct, batch_size=batch_size, schedule=schedule, created_by=actor)
    session.add(activation)
    session.flush()
    return activation


def _check_schedule(schedule: dict) -> None:
    from croniter import croniter

    every, cron = schedule.get("every_minutes"), schedule.get("cron")
    if set(schedule) - {"every_minutes", "cron"} or (every is None) == (cron is None):
        raise ActivationError("schedule", 'one of {"every_minutes": n} or {"cron": "m h dom mon dow"}')
    if every is not None and (not isinstance(every, int) or every < 1):
        raise ActivationError("schedule.every_minutes", "a whole number of minutes, at least 1")
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron)):
        raise ActivationError("schedule.cron", "not a valid cron expression")


def _find_segment(session: Session, ref) -> Segment:
    if isinstance(ref, int) or str(ref).isdigit():
        seg = session.get(Segment, int(ref)) if 0 < int(ref) < 2**31 else None
    else:
        seg = session.scalar(select(Segment).where(Segment.name == str(ref)))
    if seg is None:
        raise ActivationError("segment", "no such segment", 422)
    return seg


def find_activation(session: Session, ref) -> Activation:
    if isinstance(ref, int) or str(ref).isdigit():
        act = session.get(Activation, int(ref)) if 0 < int(ref) < 2**31 else None
    else:
        act = session.scalar(select(Activation).where(Activation.name == str(ref)))
    if act is None:
        raise ActivationError("activation", "no such activation", 404)
    return act


def activation_dict(session: Session, act: Activation) -> dict:
    dest = session.get(Destination, act.destination_id)
    present = session.scalar(select(func.count()).select_from(ActivationMember).where(
        ActivationMember.activation_id == act.id, ActivationMember.present.is_(True)))
    return {"id": act.id, "name": act.name, "segment_id": act.segment_id, "destination": dest.name,
            "destination_type": dest.type, "purpose": act.purpose, "fields": ["profile_id", *act.fields],
            "holdout_pct": act.holdout_pct, "batch_size": act.batch_size, "schedule": act.schedule,
            "active": act.active, "created_by": act.created_by, "created_at": act.created_at.isoformat(),
            "last_run_at": act.last_run_at.isoformat() if act.last_run_at else None, "in_destination": present}


def set_active(runtime: Runtime, activation, active: bool, actor: str = "cli") -> dict:
    """Pause an activation (no subject is added any more) or resume it.
    Paused runs — manual or scheduled — still send removals, so a pause never
    keeps a subject in a destination after they revoke consent or leave the
    segment. Idempotent."""
    with runtime.session() as session:
        act = find_activation(session, activation)
        act.active = active
        log.info("activation=%s %s by=%s", act.id, "resumed" if active else "paused", actor)
        return activation_dict(session, act)


def in_holdout(activation: Activation, profile_id: str) -> bool:
    """The activation's own control group: stable per (activation, subject),
    independent of the segment's holdout and of other activations'."""
    if not activation.holdout_pct:
        return False
    digest = hashlib.sha256(f"holdout:{activation.id}:{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < activation.holdout_pct


# -- runs ------------------------------------------------------------------------------------


def submit_run(runtime: Runtime, activation: str | int, trigger: str = "cli",
               progress: Callable[[int], None] | None = None, here: bool = False) -> dict:
    """Run now (no Redis; `progress` gets subject counts) or queue an rq job
    whose only argument is the run id. Returns the run (or its id and job id)."""
    with runtime.session() as session:
        act = find_activation(session, activation)
        run = ActivationRun(activation_id=act.id, trigger=trigger, status="queued")
        session.add(run)
        session.flush()
        run_id = run.id
    if here or not runtime.settings.redis_url:
        return execute_run(runtime, run_id, progress)
    from cdp.jobs import queue

    job = queue(runtime).enqueue(run_job, run_id, description=f"activation run {run_id}", job_timeout=RUN_JOB_TIMEOUT,
                                 failure_ttl=7 * 86400)
    with runtime.session() as session:
        session.get(ActivationRun, run_id).job_id = job.id
    log.info("queued activation run=%s job=%s", run_id, job.id)
    return {"run_id": run_id, "job_id": job.id, "status": "queued"}


def run_job(run_id: int) -> dict:
    """rq job: the payload is the run id only; the result holds counts only."""
    from cdp.jobs import _worker_runtime

    out = execute_run(_worker_runtime(), run_id)
    return {k: out[k] for k in ("id", "status", "sent", "added", "removed", "failed")}


def execute_run(runtime: Runtime, run_id: int, progress: Callable[[int], None] | None = None) -> dict:
    try:
        delivery_ids = plan_run(runtime, run_id)
    except BaseException as exc:
        text = error_text(exc)
        with runtime.session() as session:
            run = session.get(ActivationRun, run_id)
            run.status, run.error, run.finished_at = "failed", text, utcnow()
        log.warning("activation run=%s failed while planning: %s", run_id, text)
        if isinstance(exc, (ActivationError, KeyboardInterrupt, SystemExit)):
            raise
        raise ActivationError("run", text) from None
    for delivery_id in delivery_ids:
        n = deliver(runtime, delivery_id)
        if progress:
            progress(n)
    with runtime.session() as session:
        run = session.get(ActivationRun, run_id)
        _refresh_run(session, run)
        run.finished_at = utcnow()
        out = run_dict(run)
    log.info("activation run=%s %s added=%d removed=%d failed=%d", run_id, out["status"], out["added"],
             out["removed"], out["failed"])
    return out


def plan_run(runtime: Runtime, run_id: int) -> list[int]:
    """Compute the difference to send and write it as delivery rows (ids only)."""
    with runtime.session() as session:
        run = session.get(ActivationRun, run_id)
        # On PostgreSQL, concurrent plans of one activation wait for each other here.
        act = session.get(Activation, run.activation_id, with_for_update=True)
        segment = session.get(Segment, act.segment_id)
        run.status, run.started_at = "running", utcnow()
        allowed = list(session.scalars(gated_members(segment, act.purpose)))
        wanted = [pid for pid in allowed if not in_holdout(act, pid)]
        sm, pm = SegmentMember.__table__, ProfileMetrics.__table__
        members = (select(func.count()).select_from(sm).join(pm, pm.c.profile_id == sm.c.profile_id)
                   .where(sm.c.segment_id == segment.id, sm.c.exited_at.is_(None)))
        segment_held = session.scalar(members.where(pm.c.holdout_bucket < segment.holdout_pct))
        not_held = session.scalar(members.where(pm.c.holdout_bucket >= segment.holdout_pct))
        run.held_out = segment_held + (len(allowed) - len(wanted))
        run.skipped_consent = max(not_held - len(allowed), 0)

        am = ActivationMember
        present = set(session.scalars(select(am.profile_id).where(am.activation_id == act.id, am.present.is_(True))))
        in_flight: set[str] = set()
        for ids in session.scalars(select(Delivery.profile_ids).where(Delivery.activation_id == act.id,
                                                                      Delivery.status.in_(OPEN))):
            in_flight.update(ids)
        wanted_set = set(wanted)
        # Paused: removals only (a revocation or an exit must still reach the destination).
        adds = [pid for pid in wanted if pid not in present and pid not in in_flight] if act.active else []
        removes = sorted(pid for pid in present - wanted_set if pid not in in_flight)

        ordinal, created = 0, []
        for op, ids in (("remove", removes), ("add", adds)):
            for start in range(0, len(ids), act.batch_size):
                chunk = ids[start:start + act.batch_size]
                ordinal += 1
                digest = hashlib.sha256(f"{op}\n".encode() + "\n".join(chunk).encode()).hexdigest()
                delivery = Delivery(run_id=run.id, activation_id=act.id, ordinal=ordinal, op=op, profile_ids=chunk,
                                    content_hash=digest, status="pending",
                                    idempotency_key=f"cdp-act{act.id}-run{run.id}-{ordinal}-{digest[:16]}")
                session.add(delivery)
                created.append(delivery)
        session.flush()
        run.deliveries = len(created)
        act.last_run_at = utcnow()
        log.info("activation run=%s planned adds=%d removes=%d batches=%d", run.id, len(adds), len(removes),
                 len(created))
        return [d.id for d in created]


def deliver(runtime: Runtime, delivery_id: int) -> int:
    """Send one delivery (one attempt, with the HTTP kit's retries inside);
    returns the number of subjects it covered. Done only after the
    destination acknowledged; failed → the failure registry with the reason."""
    now = utcnow()
    with runtime.session() as session:
        # Claimed with one UPDATE, so two workers never send the same delivery at once.
        claimed = session.execute(update(Delivery).where(
            Delivery.id == delivery_id, or_(Delivery.status == "pending", _in_registry(now))).values(
            status="sending", attempts=Delivery.attempts + 1, failed_at=now)).rowcount  # failed_at: sending since
    if not claimed:
        return 0  # done, discarded, or being sent by someone else
    connector = None
    try:
        prepared = _prepare(runtime, delivery_id)
    except BaseException as exc:  # noqa: BLE001 - e.g. the destination's plugin is gone or its config invalid
        return _failed(runtime, delivery_id, exc, connector)
    d, act, dest, connector, ids, rows, maybe_there, payload, unreadable = prepared
    try:
        if not payload:
            result = None
        elif d.op == "add":
            result = connector.deliver(payload, d.idempotency_key)
        else:
            result = connector.remove(payload, idempotency_key=d.idempotency_key)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded; interrupts still propagate
        return _failed(runtime, delivery_id, exc, connector)
    refused = {i for i, _ in (result.errors if result else [])}
    with runtime.session() as session:
        d = session.get(Delivery, delivery_id)
        keys = runtime.keys(session)
        done_ids = [pid for i, pid in enumerate(ids) if i not in refused]
        when = utcnow()
        if d.op == "add":
            _mark_present(session, keys, act, connector, [r for i, r in enumerate(rows) if i not in refused]
                          + maybe_there, d.id, when)
            recipient = Recipient("destination", f"{dest.type}:{dest.name}", dest.name)
            record_disclosures(session, recipient, act.purpose, done_ids, ["profile_id", *act.fields], at=when)
        else:
            # Subjects whose reference is unreadable (data key erased) cannot be named to the tool: the
            # erasure request's own propagation deals with them; they are no longer counted as present.
            session.execute(update(ActivationMember).where(
                ActivationMember.activation_id == act.id,
                ActivationMember.profile_id.in_(done_ids + unreadable)).values(
                present=False, removed_at=when, ref_ct=None, ref_key_id=None, delivery_id=d.id))
        d.status, d.sent, d.delivered_at = "done", len(done_ids), when
        d.failed_at = d.next_retry_at = None
        d.last_error = (f"{len(refused)} row(s) refused by the destination: "
                        + "; ".join(sorted({m for _, m in result.errors}))[:900]) if refused else None
        _refresh_run(session, session.get(ActivationRun, d.run_id))
        keys.forget()
    return len(d.profile_ids)


def _prepare(runtime: Runtime, delivery_id: int):
    """What one attempt sends, read in its own transaction (rows decrypted in memory only)."""
    with runtime.session() as session:
        d = session.get(Delivery, delivery_id)
        act = session.get(Activation, d.activation_id)
        segment = session.get(Segment, act.segment_id)
        dest = session.get(Destination, act.destination_id)
        keys = runtime.keys(session)
        connector = build_destination(session, keys, dest)
        sent_before = d.attempts > 1
        if d.op == "add":
            # The consent gate again, at send time: a revocation since planning (or since a failure) wins.
            sm = SegmentMember.__table__
            ok = set(session.scalars(gated_members(segment, act.purpose).where(sm.c.profile_id.in_(d.profile_ids))))
            ids = [pid for pid in d.profile_ids if pid in ok and not in_holdout(act, pid)]
            # Dropped now but possibly received by an earlier attempt whose answer was lost: keep them as
            # present (with their reference), so the next run removes them.
            dropped = [pid for pid in d.profile_ids if pid not in ok] if sent_before else []
            all_rows = {r["profile_id"]: r for r in member_rows(session, keys, ids + dropped, act.fields)}
            rows = [all_rows[pid] for pid in ids]
            maybe_there = [all_rows[pid] for pid in dropped]
            payload, unreadable = rows, []
        else:
            refs = _refs(session, keys, act, list(d.profile_ids))
            ids = [pid for pid in d.profile_ids if pid in refs]
            unreadable = [pid for pid in d.profile_ids if pid not in refs]
            payload = [refs[pid] for pid in ids]
            rows, maybe_there = [], []
        keys.forget()
    return d, act, dest, connector, ids, rows, maybe_there, payload, unreadable


def _failed(runtime: Runtime, delivery_id: int, exc: BaseException, connector) -> int:
    """Into the failure registry, with a reason that names the problem (no secret, nothing personal)."""
    if isinstance(exc, ActivationError):  # its message names the field and the problem only
        text = str(exc)[:1000]
    else:
        text = error_text(exc, connector.secret_values() if connector is not None else ())
    with runtime.session() as session:
        d = session.get(Delivery, delivery_id)
        d.status, d.last_error, d.failed_at = "failed", text, utcnow()
        d.next_retry_at = d.failed_at + REDRIVE_BACKOFF * 2 ** min(max(d.attempts - 1, 0), 6)
        _refresh_run(session, session.get(ActivationRun, d.run_id))
        run_id, attempts, subjects = d.run_id, d.attempts, len(d.profile_ids)
    log.warning("activation delivery=%s run=%s failed (attempt %d): %s", delivery_id, run_id, attempts, text)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    return subjects


def _refs(session: Session, keys: KeyStore, act: Activation, ids: list[str]) -> dict[str, str]:
    """profile id → the reference the destination knows them by (decrypted)."""
    rows = session.scalars(select(ActivationMember).where(ActivationMember.activation_id == act.id,
                                                          ActivationMember.profile_id.in_(ids)))
    out = {}
    for row in rows:
        if row.ref_ct is None:
            out[row.profile_id] = row.profile_id
            continue
        try:
            out[row.profile_id] = crypto.decrypt_json(keys.get(row.ref_key_id), row.ref_ct, "activation_members",
                                                      f"{act.id}:{row.profile_id}", "ref")
        except crypto.DecryptionError:
            log.warning("activation=%s: a subject's reference is unreadable (key erased); removal skipped", act.id)
    return out


def _mark_present(session: Session, keys: KeyStore, act: Activation, connector, rows: list[dict], delivery_id: int,
                  when) -> None:
    ref_field = connector.ref_field
    ids = [r["profile_id"] for r in rows]
    profiles = {p.id: p.key_id for p in session.scalars(select(Profile).where(Profile.id.in_(ids)))}
    existing = {m.profile_id: m for m in session.scalars(select(ActivationMember).where(
        ActivationMember.activation_id == act.id, ActivationMember.profile_id.in_(ids)))}
    for row in rows:
        pid = row["profile_id"]
        member = existing.get(pid) or ActivationMember(activation_id=act.id, profile_id=pid)
        member.present, member.added_at, member.removed_at, member.delivery_id = True, when, None, delivery_id
        if ref_field != "profile_id" and row.get(ref_field) is not None and pid in profiles:
            member.ref_key_id = profiles[pid]
            member.ref_ct = crypto.encrypt_json(keys.get(member.ref_key_id), row[ref_field], "activation_members",
                                                f"{act.id}:{pid}", "ref")
        session.add(member)
    session.flush()


def _refresh_run(session: Session, run: ActivationRun) -> None:
    """Counts and status from the run's deliveries (a re-drive later updates them too)."""
    # Called after every delivery: aggregated in SQL, so a run of N batches does not load N id lists N times.
    totals = {"add": 0, "remove": 0}
    open_ = 0
    discarded = 0
    for op, status, count, sent in session.execute(
            select(Delivery.op, Delivery.status, func.count(), func.coalesce(func.sum(Delivery.sent), 0))
            .where(Delivery.run_id == run.id).group_by(Delivery.op, Delivery.status)):
        if status == "done":
            totals[op] += sent
        elif status in ("pending", "sending"):
            open_ += count
        elif status == "discarded":
            discarded += count
    # Failed subjects are the ids of failed batches (the failure registry: normally few rows).
    failed = sum(len(ids) for ids in session.scalars(select(Delivery.profile_ids).where(
        Delivery.run_id == run.id, Delivery.status == "failed")))
    run.added, run.removed = totals["add"], totals["remove"]
    run.sent, run.failed = run.added + run.removed, failed
    if run.status not in ("queued",) and run.error is None:
        run.status = "failed" if failed else "running" if open_ else "partial" if discarded else "ok"


def run_dict(run: ActivationRun) -> dict:
    return {"id": run.id, "activation_id": run.activation_id, "trigger": run.trigger, "status": run.status,
            "job_id": run.job_id, "created_at": run.created_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "sent": run.sent, "added": run.added, "removed": run.removed, "skipped_consent": run.skipped_consent,
            "held_out": run.held_out, "failed": run.failed, "deliveries": run.deliveries, "error": run.error}


def list_runs(session: Session, activation_id: int, limit: int = 50) -> list[dict]:
    return [run_dict(r) for r in session.scalars(select(ActivationRun).where(
        ActivationRun.activation_id == activation_id).order_by(ActivationRun.id.desc()).limit(limit))]


# -- schedules (the same shapes and rules as a configured source's: cdp.sources.next_run_at) -----


def due_activations(runtime: Runtime, now=None) -> list[int]:
    """Scheduled activations whose next run (after their last one) is due (paused ones too: their runs
    send removals only)."""
    from cdp.sources import next_run_at

    now = now or utcnow()
    with runtime.session() as session:
        rows = session.scalars(select(Activation).where(Activation.schedule.is_not(None)).order_by(Activation.id)).all()
        return [a.id for a in rows if a.schedule and (a.last_run_at is None or
                                                      next_run_at(a.schedule, a.last_run_at) <= now)]


def arm(runtime: Runtime, activation_id: int, after=None, queue=None) -> str | None:
    """Queue the next scheduled run with rq's scheduler (`cdp worker` runs it) and remember its job id;
    the job re-arms itself. Only with REDIS_URL; without it, `cdp activations run-due` from cron."""
    from cdp import jobs
    from cdp.sources import next_run_at

    with runtime.session() as session:
        act = session.get(Activation, activation_id)
        if not act.schedule:
            return None
        when = next_run_at(act.schedule, after or utcnow())
        job = (queue or jobs.queue(runtime)).enqueue_at(
            when, scheduled_run_job, activation_id, description=f"scheduled activation {activation_id}",
            job_timeout=RUN_JOB_TIMEOUT, failure_ttl=7 * 86400)
        act.schedule_job_id = job.id
    log.info("scheduled activation=%s at=%s job=%s", activation_id, when.isoformat(), job.id)
    return job.id


def scheduled_run_job(activation_id: int) -> dict:
    """A scheduled run: it first arms the next one (so a failure keeps the schedule), unless the
    schedule changed since it was queued; then runs (payload: the activation id)."""
    from rq import Queue, get_current_job

    from cdp.jobs import _worker_runtime

    runtime = _worker_runtime()
    job = get_current_job()
    with runtime.session() as session:
        act = session.get(Activation, activation_id)
        current = act is not None and act.schedule and act.schedule_job_id == (job.id if job else None)
    if not current:
        return {"status": "superseded"}
    arm(runtime, activation_id, queue=Queue(job.origin, connection=job.connection))
    out = submit_run(runtime, activation_id, trigger="schedule", here=True)
    return {k: out[k] for k in ("id", "status", "sent", "added", "removed", "failed")}


# -- the failure registry ---------------------------------------------------------------------


def delivery_dict(d: Delivery) -> dict:
    """A delivery as shown to operators: counts and ids, never the rows."""
    return {"id": d.id, "run_id": d.run_id, "activation_id": d.activation_id, "ordinal": d.ordinal, "op": d.op,
            "subjects": len(d.profile_ids), "idempotency_key": d.idempotency_key, "status": d.status,
            "attempts": d.attempts, "last_error": d.last_error,
            "failed_at": d.failed_at.isoformat() if d.failed_at and d.status == "failed" else None,
            "next_retry_at": d.next_retry_at.isoformat() if d.next_retry_at else None}


def _in_registry(now):
    """Failed deliveries, and deliveries left "sending" by a crash (past the lease)."""
    return or_(Delivery.status == "failed",
               and_(Delivery.status == "sending", Delivery.failed_at < now - SENDING_LEASE))


def failures(session: Session, activation_id: int | None = None) -> list[dict]:
    query = select(Delivery).where(_in_registry(utcnow())).order_by(Delivery.id)
    if activation_id is not None:
        query = query.where(Delivery.activation_id == activation_id)
    return [delivery_dict(d) for d in session.scalars(query)]


def retry(runtime: Runtime, delivery_ids: Iterable[int] | None = None, activation_id: int | None = None,
          due_only: bool = False, progress: Callable[[int], None] | None = None, here: bool = False) -> dict:
    """Re-drive failed deliveries (the given ones, or all of an activation,
    or all; `due_only`: those whose next_retry_at has come), with their
    original idempotency keys. In-process, or one rq job (ids only)."""
    now = utcnow()
    with runtime.session() as session:
        if delivery_ids is not None:
            ids = _registered(session, delivery_ids, now)
        else:
            query = select(Delivery.id).where(_in_registry(now)).order_by(Delivery.id)
            if activation_id is not None:
                query = query.where(Delivery.activation_id == activation_id)
            if due_only:
                query = query.where(Delivery.next_retry_at <= now)
            ids = list(session.scalars(query))
    if not ids:
        return {"retried": 0, "deliveries": []}
    if runtime.settings.redis_url and not here:
        from cdp.jobs import queue

        job = queue(runtime).enqueue(retry_job, ids, description=f"re-drive {len(ids)} deliveries",
                                     job_timeout=RUN_JOB_TIMEOUT, failure_ttl=7 * 86400)
        return {"retried": len(ids), "deliveries": ids, "job_id": job.id}
    for delivery_id in ids:
        n = deliver(runtime, delivery_id)
        if progress:
            progress(n)
    with runtime.session() as session:
        return {"retried": len(ids), "deliveries": [delivery_dict(session.get(Delivery, i)) for i in ids]}


def _registered(session: Session, delivery_ids: Iterable, now) -> list[int]:
    """These deliveries, all of which must exist and be in the failure registry."""
    wanted = sorted({int(i) for i in delivery_ids})
    found = set(session.scalars(select(Delivery.id).where(Delivery.id.in_(wanted))))
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ActivationError("delivery", f"no such delivery: {', '.join(map(str, missing))}", 404)
    in_registry = set(session.scalars(select(Delivery.id).where(Delivery.id.in_(wanted), _in_registry(now))))
    not_failed = [i for i in wanted if i not in in_registry]
    if not_failed:
        raise ActivationError("delivery", f"not in the failure registry: {', '.join(map(str, not_failed))}", 409)
    return wanted


def discard(runtime: Runtime, delivery_ids: Iterable[int], actor: str = "cli") -> dict:
    """Take deliveries out of the failure registry without sending them (one
    the destination will never accept as planned). Their subjects are no
    longer in flight, so the next run plans them again from the current state
    of the segment and of consent; their runs show status "partial"."""
    with runtime.session() as session:
        ids = _registered(session, delivery_ids, utcnow())
        deliveries = session.scalars(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)).all()
        for d in deliveries:
            d.status = "discarded"
            d.next_retry_at = None
        session.flush()
        for run_id in sorted({d.run_id for d in deliveries}):
            _refresh_run(session, session.get(ActivationRun, run_id))
        log.info("discarded deliveries=%s by=%s", ids, actor)
        return {"discarded": len(ids), "deliveries": [delivery_dict(d) for d in deliveries]}


def retry_job(delivery_ids: list[int]) -> dict:
    """rq job: re-drive failed deliveries (the payload is their ids)."""
    from cdp.jobs import _worker_runtime

    runtime = _worker_runtime()
    for delivery_id in delivery_ids:
        deliver(runtime, delivery_id)
    with runtime.session() as session:
        statuses = session.scalars(select(Delivery.status).where(Delivery.id.in_(delivery_ids))).all()
    return {"done": statuses.count("done"), "failed": statuses.count("failed")}
