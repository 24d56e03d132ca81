"""Sync history of configured sources (table sync_runs). Counts, times and
an error text that names the problem, never personal data or secrets."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, utcnow


class SyncRun(Base):
    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(ForeignKey("sources.name"), index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="cli")  # cli | queue | schedule
    stream: Mapped[str | None] = mapped_column(String(100))  # None: every stream
    full: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | failed
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    batches: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1000))
    job_id: Mapped[str | None] = mapped_column(String(64))

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "updated": self.updated, "duplicate": self.duplicate,
                "rejected": self.rejected}
