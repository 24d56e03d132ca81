"""Tables of destinations and activation runs (migration 0008).

No personal data in clear: profile ids, counts, field names and error
texts that name the problem only. A destination's secrets are one
ciphertext under its own data key (AAD destinations,name,secrets), as a
source's are; the reference a destination knows a subject by (e.g. the
e-mail a list member is keyed on) is kept encrypted under the subject's
data key (AAD activation_members,<activation>:<profile>,ref).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, utcnow


class Destination(Base):
    """A configured destination: a connector type and its configuration."""

    __tablename__ = "destinations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)  # non-secret configuration
    secrets_key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    secrets_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Activation(Base):
    """A segment sent to a destination for one purpose, with the fields allowed."""

    __tablename__ = "activations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), index=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(64))  # the consent purpose every subject sent must allow
    fields: Mapped[list] = mapped_column(JSON)
    holdout_pct: Mapped[int] = mapped_column(Integer, default=0)  # 0-50, on top of the segment's own
    batch_size: Mapped[int] = mapped_column(Integer, default=500)
    schedule: Mapped[dict | None] = mapped_column(JSON)  # {"every_minutes": n} or {"cron": "..."}
    schedule_job_id: Mapped[str | None] = mapped_column(String(64))  # the rq job of the next scheduled run
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ActivationRun(Base):
    __tablename__ = "activation_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activation_id: Mapped[int] = mapped_column(ForeignKey("activations.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="cli")  # cli | api | queue | schedule
    job_id: Mapped[str | None] = mapped_column(String(64))
    # queued | running | ok | failed (some delivery is in the failure registry) | partial (some were discarded)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent: Mapped[int] = mapped_column(Integer, default=0)  # subjects in acknowledged deliveries (added + removed)
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    skipped_consent: Mapped[int] = mapped_column(Integer, default=0)  # members the consent gate kept back
    held_out: Mapped[int] = mapped_column(Integer, default=0)  # members in a holdout (control) group
    failed: Mapped[int] = mapped_column(Integer, default=0)  # subjects in deliveries that failed
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1000))


class Delivery(Base):
    """One batch of one run: what to add or remove (profile ids only), its
    idempotency key, and its state. status "failed" is the failure registry."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("run_id", "ordinal"), Index("ix_deliveries_status", "status", "activation_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("activation_runs.id"), index=True)
    activation_id: Mapped[int] = mapped_column(ForeignKey("activations.id"))
    ordinal: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8))  # add | remove
    profile_ids: Mapped[list] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    # pending | sending | done | failed | discarded
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times handed to the destination
    sent: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ActivationMember(Base):
    """What the destination has of one subject for one activation: present
    (added and not removed since), and the reference it knows them by."""

    __tablename__ = "activation_members"
    activation_id: Mapped[int] = mapped_column(ForeignKey("activations.id"), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    ref_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # None: the reference is the profile id
    ref_key_id: Mapped[str | None] = mapped_column(String(36))  # the subject's data key that sealed ref_ct
    added_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivery_id: Mapped[int | None] = mapped_column(Integer)  # the last delivery that changed this row
