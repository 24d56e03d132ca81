"""Tables of portfolios (migration 0007): customer portfolios, their
managers (staff users) with history, hand-assigned members with history, and
daily snapshots. No personal data: ids, counts, amounts and dates only."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, utcnow

KINDS = ("manual", "segment")


class Portfolio(Base):
    """A named group of customers with one responsible manager. `manual`:
    members added and removed by hand (portfolio_members); `segment`: members
    are the current materialized members of `segment_id`."""

    __tablename__ = "portfolios"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(16), default="manual")
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"), index=True)
    manager_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PortfolioManager(Base):
    """Manager history: a row per assignment (unassigned_at NULL for the current one)."""

    __tablename__ = "portfolio_managers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id"), index=True)
    manager_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    unassigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_by: Mapped[str] = mapped_column(String(100), default="system")


class PortfolioMember(Base):
    """Hand-assigned membership with history: a row per stay (removed_at NULL
    while inside). A profile is in at most one hand-assigned portfolio at a
    time (one account manager per customer): a partial unique index."""

    __tablename__ = "portfolio_members"
    __table_args__ = (
        Index("ix_portfolio_members_current", "portfolio_id", "removed_at", "profile_id"),
        Index("uq_portfolio_members_profile_current", "profile_id", unique=True,
              sqlite_where=text("removed_at IS NULL"), postgresql_where=text("removed_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id"))
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(100), default="system")
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_by: Mapped[str | None] = mapped_column(String(100))


class PortfolioSnapshot(Base):
    """A portfolio's indicators on one day (one row per portfolio and day;
    a second snapshot the same day replaces the first)."""

    __tablename__ = "portfolio_snapshots"
    __table_args__ = (UniqueConstraint("portfolio_id", "as_of"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id"))
    as_of: Mapped[date] = mapped_column(Date)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    manager_id: Mapped[str | None] = mapped_column(String(36))  # the manager on that day
    size: Mapped[int] = mapped_column(Integer, default=0)
    customers: Mapped[int] = mapped_column(Integer, default=0)  # members with >= 1 purchase
    total_ltv: Mapped[Decimal] = mapped_column(Numeric(16, 2), default=0)
    avg_ltv: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    churned: Mapped[int] = mapped_column(Integer, default=0)
    churn_rate: Mapped[float | None] = mapped_column(Float)
    nps_respondents: Mapped[int] = mapped_column(Integer, default=0)
    promoters: Mapped[int] = mapped_column(Integer, default=0)
    detractors: Mapped[int] = mapped_column(Integer, default=0)
    nps: Mapped[float | None] = mapped_column(Float)
