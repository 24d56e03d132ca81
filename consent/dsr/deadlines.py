"""Deadlines of data-subject requests, in Brasília time.

Art. 19 II: a complete declaration within 15 days of the request (the
ANPD's regulation on subject rights is pending, so the number is a setting,
CDP_DSR_DEADLINE_DAYS); small processing agents get doubled deadlines (Res.
CD/ANPD 2/2022, CDP_SMALL_AGENT=1). The day of the request does not count;
the request is due at the end of the last day, Brasília time."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

BRASILIA = ZoneInfo("America/Sao_Paulo")


def deadline_days(settings) -> int:
    return settings.dsr_deadline_days * (2 if settings.small_agent else 1)


def end_of_day(day: date) -> datetime:
    """23:59:59 of a Brasília calendar day, in UTC."""
    return datetime.combine(day, time(23, 59, 59), BRASILIA).astimezone(timezone.utc)


def local_date(moment: datetime) -> date:
    return moment.astimezone(BRASILIA).date()


def due_at(received_at: datetime, days: int) -> datetime:
    return end_of_day(local_date(received_at) + timedelta(days=days))


def brasilia(moment: datetime | None) -> str | None:
    """A timestamp as Brasília local time (what staff and subjects read)."""
    return moment.astimezone(BRASILIA).isoformat() if moment else None


def brasilia_text(moment: datetime, language: str = "pt-BR") -> str:
    local = moment.astimezone(BRASILIA)
    return local.strftime("%d/%m/%Y %H:%M") + (" (Brasília)" if language != "en" else " (Brasília time)")
