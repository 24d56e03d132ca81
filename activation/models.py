"""Tables of the activation package (migration 0006). No personal data:
profile ids, counts, amounts, scores and timestamps only."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, utcnow


class MetricsTotals(Base):
    """Running totals over `profile_metrics` (one row, id 1), kept by delta
    at every recompute: LTV needs the base's average customer lifetime, and
    scanning every profile's metrics for it on each resolution chunk made
    incremental work grow with the base (migration 0010)."""

    __tablename__ = "metrics_totals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purchasers: Mapped[int] = mapped_column(BigInteger, default=0)  # profiles with at least one purchase
    lifetime_days: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of their lifetime_days


class ProfileMetrics(Base):
    """Derived traits of one active profile (docs/metrics.md has every formula)."""

    __tablename__ = "profile_metrics"
    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # purchases
    purchase_count: Mapped[int] = mapped_column(Integer, default=0, index=True)
    monetary_total: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=0)
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    recency_days: Mapped[int | None] = mapped_column(Integer)  # = days since last purchase, as of computed_at
    average_order_value: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    lifetime_days: Mapped[int | None] = mapped_column(Integer)
    purchase_frequency: Mapped[float | None] = mapped_column(Float)  # purchases per year
    ltv: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)
    churned: Mapped[bool | None] = mapped_column(Boolean, index=True)
    # surveys (last answer of each kind)
    nps_score: Mapped[int | None] = mapped_column(Integer)
    nps_class: Mapped[str | None] = mapped_column(String(10))  # promoter | neutral | detractor
    csat_score: Mapped[int | None] = mapped_column(Integer)
    ces_score: Mapped[int | None] = mapped_column(Integer)
    # Reclame Aqui complaints
    complaints: Mapped[int] = mapped_column(Integer, default=0)
    complaints_unanswered: Mapped[int] = mapped_column(Integer, default=0)  # status nao_respondida
    complaints_answered: Mapped[int] = mapped_column(Integer, default=0)  # respondida or resolvida
    complaints_resolved: Mapped[int] = mapped_column(Integer, default=0)  # resolvida
    complaint_rating_sum: Mapped[int] = mapped_column(Integer, default=0)
    complaint_rating_count: Mapped[int] = mapped_column(Integer, default=0)
    would_do_business_yes: Mapped[int] = mapped_column(Integer, default=0)
    would_do_business_answers: Mapped[int] = mapped_column(Integer, default=0)
    last_complaint_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 0-99 from a hash of the profile id: members with a bucket under a segment's
    # holdout_pct are held out of activation (stable across refreshes).
    holdout_bucket: Mapped[int] = mapped_column(Integer, default=0)


class Segment(Base):
    """A named audience; its rules live in versions (each edit is a new version)."""

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    version: Mapped[int] = mapped_column(Integer, default=1)  # the current version
    holdout_pct: Mapped[int] = mapped_column(Integer, default=0)  # 0-50: members kept out of activation
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SegmentVersion(Base):
    __tablename__ = "segment_versions"
    __table_args__ = (UniqueConstraint("segment_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    rules: Mapped[dict] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SegmentMember(Base):
    """Membership history: a row per stay in the segment (exited_at NULL while inside)."""

    __tablename__ = "segment_members"
    __table_args__ = (Index("ix_segment_members_current", "segment_id", "exited_at", "profile_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    exited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKeyAccess(Base):
    """What one API key may receive from segment members: its declared
    purpose (checked against the consent ledger) and the fields allowed."""

    __tablename__ = "api_key_access"
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
