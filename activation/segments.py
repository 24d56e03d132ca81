"""Segments: versioned rules, previews and materialized membership
(segment_members keeps entered_at/exited_at history). Every query is the
compiled SQL of activation.rules; refresh is set-based (two statements)."""
from __future__ import annotations

import logging

from marshmallow import ValidationError
from sqlalchemy import except_, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from activation.errors import FieldError
from activation.models import Segment, SegmentMember, SegmentVersion
from activation.rules import members_query, validate_rules
from cdp.models import utcnow
from cdp.store import Runtime

log = logging.getLogger(__name__)

SAMPLE = 10


class SegmentError(FieldError):
    """Bad input, naming the field: `field` and a message without personal data."""


def _rules_of(session: Session, segment: Segment) -> dict:
    return session.scalar(select(SegmentVersion.rules).where(SegmentVersion.segment_id == segment.id,
                                                             SegmentVersion.version == segment.version))


def check_rules(rules) -> dict:
    try:
        return validate_rules(rules)
    except ValidationError as exc:
        field, messages = next(iter(exc.messages.items()))
        raise SegmentError("rules" if field == "_schema" else f"rules.{field}", "; ".join(messages)) from None


def create_segment(session: Session, name: str, rules: dict, description: str | None = None,
                   holdout_pct: int = 0, actor: str = "system") -> Segment:
    rules = check_rules(rules)
    if not 0 <= holdout_pct <= 50:
        raise SegmentError("holdout_pct", "must be between 0 and 50")
    if session.scalar(select(Segment.id).where(Segment.name == name)) is not None:
        raise SegmentError("name", "a segment with this name exists", 409)
    segment = Segment(name=name, description=description, version=1, holdout_pct=holdout_pct)
    session.add(segment)
    session.flush()
    session.add(SegmentVersion(segment_id=segment.id, version=1, rules=rules, created_by=actor))
    try:
        session.flush()
    except IntegrityError:
        raise SegmentError("name", "a segment with this name exists", 409) from None
    return segment


def update_segment(session: Session, segment: Segment, rules: dict | None = None, description: str | None = None,
                   holdout_pct: int | None = None, actor: str = "system") -> Segment:
    """New rules make a new version; description and holdout change in place."""
    if rules is not None:
        rules = check_rules(rules)
        if rules != _rules_of(session, segment):
            segment.version += 1
            session.add(SegmentVersion(segment_id=segment.id, version=segment.version, rules=rules, created_by=actor))
    if holdout_pct is not None:
        if not 0 <= holdout_pct <= 50:
            raise SegmentError("holdout_pct", "must be between 0 and 50")
        segment.holdout_pct = holdout_pct
    if description is not None:
        segment.description = description
    segment.updated_at = utcnow()
    session.flush()
    return segment


def segment_dict(session: Session, segment: Segment, with_history: bool = False) -> dict:
    out = {"id": segment.id, "name": segment.name, "description": segment.description, "version": segment.version,
           "rules": _rules_of(session, segment), "holdout_pct": segment.holdout_pct,
           "created_at": segment.created_at.isoformat(), "updated_at": segment.updated_at.isoformat(),
           "refreshed_at": segment.refreshed_at.isoformat() if segment.refreshed_at else None,
           "members": session.scalar(select(func.count()).select_from(SegmentMember).where(
               SegmentMember.segment_id == segment.id, SegmentMember.exited_at.is_(None)))}
    if with_history:
        out["versions"] = [{"version": v.version, "rules": v.rules, "created_by": v.created_by,
                            "created_at": v.created_at.isoformat()}
                           for v in session.scalars(select(SegmentVersion).where(
                               SegmentVersion.segment_id == segment.id).order_by(SegmentVersion.version))]
    return out


def preview(session: Session, rules: dict, sample: int = SAMPLE, now=None) -> dict:
    """Count and a sample of profile ids, straight from the compiled SQL."""
    query = members_query(check_rules(rules), now).subquery()
    count = session.scalar(select(func.count()).select_from(query))
    ids = list(session.scalars(select(query.c.profile_id).order_by(query.c.profile_id).limit(sample)))
    return {"count": count, "sample": ids}


def refresh_members(session: Session, segment: Segment, now=None) -> dict:
    """Materialize membership: members no longer matching exit, new matches enter.
    `now` anchors event time windows (tests pass a fixed one)."""
    now = now or utcnow()
    current = members_query(_rules_of(session, segment), now).subquery()
    sm = SegmentMember.__table__
    # NOT EXISTS, not NOT IN: PostgreSQL cannot hash a NOT IN subquery larger than work_mem and
    # rescans it per member (quadratic: hours at 250k members of 1M profiles); this is an anti-join.
    left = session.execute(update(sm).where(
        sm.c.segment_id == segment.id, sm.c.exited_at.is_(None),
        ~exists(select(current.c.profile_id).where(current.c.profile_id == sm.c.profile_id)))
        .values(exited_at=now)).rowcount or 0
    before = _current_count(session, segment.id)
    inside = select(sm.c.profile_id).where(sm.c.segment_id == segment.id, sm.c.exited_at.is_(None))
    # EXCEPT, not NOT EXISTS: a set operation reads both sides before its first row is inserted. With an
    # anti-join PostgreSQL planned a nested loop over the (then empty) segment_members that rescanned the
    # rows this same INSERT was adding: quadratic, > 6 min for 254k entering members of 1M profiles.
    entering = except_(select(current.c.profile_id), inside).subquery()
    session.execute(insert(sm).from_select(
        ["segment_id", "profile_id", "version", "entered_at"],
        select(literal(segment.id), entering.c.profile_id, literal(segment.version),
               literal(now, sm.c.entered_at.type))))
    # Counted, not taken from rowcount (psycopg reports -1 for INSERT ... SELECT here).
    entered = _current_count(session, segment.id) - before
    segment.refreshed_at = now
    log.info("segment refreshed id=%s entered=%d exited=%d", segment.id, entered, left)
    return {"entered": entered, "exited": left}


def _current_count(session: Session, segment_id: int) -> int:
    return session.scalar(select(func.count()).select_from(SegmentMember).where(
        SegmentMember.segment_id == segment_id, SegmentMember.exited_at.is_(None)))


def refresh_segment(runtime: Runtime, segment_id: int) -> dict:
    with runtime.session() as session:
        segment = session.get(Segment, segment_id)
        if segment is None:
            raise SegmentError("segment", "not found", 404)
        return refresh_members(session, segment)


def refresh_segment_job(segment_id: int) -> dict:
    """rq job: the payload is the segment id only."""
    from cdp.jobs import _worker_runtime

    return refresh_segment(_worker_runtime(), segment_id)


def submit_refresh(runtime: Runtime, segment_id: int) -> dict:
    """Refresh now (no Redis) or queue it; returns the counts or the job id."""
    if not runtime.settings.redis_url:
        return refresh_segment(runtime, segment_id)
    from cdp.jobs import queue

    job = queue(runtime).enqueue(refresh_segment_job, segment_id, description=f"refresh segment {segment_id}",
                                 job_timeout=1800)
    return {"job_id": job.id}
