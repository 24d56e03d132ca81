"""The disclosure log (LGPD Art. 37 records; Art. 18 VII "with whom was my
data shared"): every time personal data of a profile leaves the platform —
to an API key's caller or to a destination — one row says who received
which fields, for which purpose, when. Only ids, field names and purposes
are stored: never the values disclosed.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from sqlalchemy import JSON, Index, Integer, String, Text, cast, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from cdp.models import Base, UTCDateTime, utcnow

RECIPIENT_TYPES = ("api_key", "destination")


class Disclosure(Base):
    __tablename__ = "disclosures"
    __table_args__ = (Index("ix_disclosures_recipient", "recipient_type", "recipient_id", "disclosed_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recipient_type: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[str] = mapped_column(String(100))
    recipient_name: Mapped[str] = mapped_column(String(200))
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    fields: Mapped[list] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))
    disclosed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


@dataclass(frozen=True)
class Recipient:
    type: str  # api_key | destination
    id: str
    name: str

    def __post_init__(self):
        if self.type not in RECIPIENT_TYPES:
            raise ValueError(f"recipient type must be one of {', '.join(RECIPIENT_TYPES)}")


def record_disclosures(session: Session, recipient: Recipient, purpose: str, profile_ids: Iterable[str],
                       fields: Iterable[str], at: datetime | None = None) -> int:
    """One row per profile disclosed (a bulk insert: activations send thousands)."""
    when = at or utcnow()
    names = sorted(set(fields))
    rows = [{"recipient_type": recipient.type, "recipient_id": str(recipient.id), "recipient_name": recipient.name,
             "profile_id": pid, "fields": names, "purpose": purpose, "disclosed_at": when}
            for pid in dict.fromkeys(profile_ids)]
    for start in range(0, len(rows), 1000):
        session.execute(insert(Disclosure), rows[start:start + 1000])
    return len(rows)


def _row(d: Disclosure) -> dict:
    return {"recipient_type": d.recipient_type, "recipient_id": d.recipient_id, "recipient_name": d.recipient_name,
            "profile_id": d.profile_id, "fields": list(d.fields), "purpose": d.purpose,
            "disclosed_at": d.disclosed_at.isoformat()}


def disclosures_for(session: Session, profile_id: str | Iterable[str]) -> list[dict]:
    """Every disclosure of a profile (or of several: a subject's merge lineage), oldest first."""
    ids = [profile_id] if isinstance(profile_id, str) else list(profile_id)
    if not ids:
        return []
    rows = session.scalars(select(Disclosure).where(Disclosure.profile_id.in_(ids))
                           .order_by(Disclosure.disclosed_at, Disclosure.id))
    return [_row(d) for d in rows]


def recipients_for(session: Session, profile_ids: Iterable[str]) -> list[Recipient]:
    """Distinct recipients that received data of these profiles (propagation of Art. 18 §6)."""
    ids = list(profile_ids)
    if not ids:
        return []
    rows = session.execute(select(Disclosure.recipient_type, Disclosure.recipient_id, Disclosure.recipient_name)
                           .where(Disclosure.profile_id.in_(ids)).distinct()
                           .order_by(Disclosure.recipient_type, Disclosure.recipient_id))
    return [Recipient(t, i, n) for t, i, n in rows]


def profiles_disclosed_to(session: Session, recipients: Iterable[tuple[str, str]], since: datetime | None = None,
                          until: datetime | None = None) -> set[str]:
    """Profiles whose data went to any of (recipient_type, recipient_id) within a window (incidents)."""
    found: set[str] = set()
    for rtype, rid in recipients:
        query = select(Disclosure.profile_id).where(Disclosure.recipient_type == rtype,
                                                    Disclosure.recipient_id == str(rid))
        if since is not None:
            query = query.where(Disclosure.disclosed_at >= since)
        if until is not None:
            query = query.where(Disclosure.disclosed_at <= until)
        found.update(session.scalars(query.distinct()))
    return found


PROCESSING_COLUMNS = ("recipient_type", "recipient_id", "recipient_name", "purpose", "fields", "profiles",
                      "disclosures", "first_at", "last_at")


def processing_records(session: Session, fmt: str = "json") -> str:
    """Records of processing operations (Art. 37) for the console and the
    RIPD (Art. 38): per recipient, purpose and field set, how many profiles
    and disclosures, first and last time. JSON or CSV."""
    if fmt not in ("json", "csv"):
        raise ValueError("fmt must be json or csv")
    # PostgreSQL cannot GROUP BY a json column: group by its text form (the
    # same list of names always serializes the same way, it is sorted on write).
    fields_text = cast(Disclosure.fields, Text)
    query = (select(Disclosure.recipient_type, Disclosure.recipient_id, Disclosure.recipient_name,
                    Disclosure.purpose, fields_text, func.count(func.distinct(Disclosure.profile_id)), func.count(),
                    func.min(Disclosure.disclosed_at), func.max(Disclosure.disclosed_at))
             .group_by(Disclosure.recipient_type, Disclosure.recipient_id, Disclosure.recipient_name,
                       Disclosure.purpose, fields_text))
    groups: dict[tuple, dict] = {}
    for rtype, rid, rname, purpose, fields, profiles, count, first, last in session.execute(query):
        fields = json.loads(fields) if isinstance(fields, str) else fields
        groups[(rtype, rid, rname, purpose, tuple(fields))] = {
            "recipient_type": rtype, "recipient_id": rid, "recipient_name": rname, "purpose": purpose,
            "fields": list(fields), "profiles": profiles, "disclosures": count,
            "first_at": _iso(first), "last_at": _iso(last)}
    rows = [groups[k] for k in sorted(groups)]
    if fmt == "json":
        return json.dumps({"processing_records": rows, "purposes": _declared_purposes(session)}, ensure_ascii=False,
                          indent=2)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PROCESSING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "fields": ";".join(row["fields"])})
    return out.getvalue()


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns aggregates of datetimes as text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def _declared_purposes(session: Session) -> list[dict]:
    """Purposes with their legal basis, from the consent ledger's catalogue when it is installed."""
    from consent.dsr.compat import declared_purposes

    return declared_purposes(session)
