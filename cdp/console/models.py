"""Console staff accounts (DPO console): e-mail kept as a keyed hash for
login lookup plus a display label; passwords as scrypt hashes."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, new_id, utcnow

ROLES = ("admin", "dpo", "analyst")
ACTING_ROLES = ("admin", "dpo")  # analysts view, never act on requests


class StaffUser(Base):
    __tablename__ = "staff_users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Staff e-mail is an employee's work address; we still store only a keyed hash
    # (login lookup) so the table leaks nothing if copied.
    email_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
