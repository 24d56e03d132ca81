"""Small pieces shared by the first-party connectors in plugins/ (not a
plugin itself: no entry point names it).

* :class:`PassCursor` — the cursor of a date-filtered, page-numbered
  listing (Nuvemshop, Bling, Reclame Aqui). A *pass* asks for everything
  changed since ``since`` and reads pages 1..n; each batch's cursor resumes
  at the next page of the same pass (same filter, so nothing is skipped
  whatever order the API sorts in); the last batch's cursor starts the next
  pass from the newest change read (or, for APIs whose list rows carry no
  change time, from when the pass began). Date filters are inclusive, so
  rows at exactly ``since`` already read are remembered by id and skipped.
* Date parsing, header lookup, and CPF/CNPJ by digit count.
"""
from __future__ import annotations

import hmac
import re
from datetime import datetime, timezone
from typing import Any, Mapping


class PassCursor:
    def __init__(self, since: datetime | None, seen=(), page: int = 1, high: datetime | None = None,
                 high_seen=(), started: datetime | None = None):
        self.since, self.seen, self.page = since, set(seen), page
        self.high, self.high_seen = high, set(high_seen)
        self.started = started or datetime.now(timezone.utc).replace(microsecond=0)

    @classmethod
    def load(cls, cursor: Any, start: datetime | None) -> "PassCursor":
        if not isinstance(cursor, dict):
            return cls(start)
        page = cursor.get("page")
        return cls(parse_date(cursor.get("since")) or start, cursor.get("seen") or (),
                   page if isinstance(page, int) and page >= 1 else 1, parse_date(cursor.get("high")),
                   cursor.get("high_seen") or (), parse_date(cursor.get("started")))

    def already_read(self, key: str, when: datetime | None) -> bool:
        if when is None or self.since is None:
            return False
        return when < self.since or (when == self.since and key in self.seen)

    def note(self, key: str, when: datetime | None) -> None:
        if when is None:
            return
        if self.high is None or when > self.high:
            self.high, self.high_seen = when, {key}
        elif when == self.high:
            self.high_seen.add(key)

    def dump(self, next_page: int | None, *, by_row_time: bool = True) -> dict:
        """The cursor after a page: resume at `next_page` of this pass, or (None) start the next pass."""
        if next_page is not None:
            return {"since": _iso(self.since), "seen": sorted(self.seen), "page": next_page,
                    "high": _iso(self.high), "high_seen": sorted(self.high_seen), "started": _iso(self.started)}
        if not by_row_time:
            return {"since": _iso(self.started), "seen": []}
        if self.high is None or (self.since is not None and self.high < self.since):
            return {"since": _iso(self.since), "seen": sorted(self.seen)}
        seen = self.high_seen | (self.seen if self.high == self.since else set())
        return {"since": _iso(self.high), "seen": sorted(seen)}


def parse_date(value: Any, default_tz=timezone.utc) -> datetime | None:
    """An ISO 8601 date-time (also "+0000" offsets and "YYYY-MM-DD HH:MM:SS") as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=default_tz)).astimezone(timezone.utc)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def same_secret(sent: str | None, expected: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


def document_kind(document: Any) -> tuple[str, str] | None:
    """("cpf"|"cnpj", value) by digit count (11 / 14); None otherwise."""
    digits = re.sub(r"\D", "", str(document or ""))
    if len(digits) == 11:
        return "cpf", digits
    if len(digits) == 14:
        return "cnpj", digits
    return None


def compact(mapping: dict) -> dict:
    """Drop empty values; strip strings."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, str):
            value = value.strip()
        if value not in (None, "", [], {}):
            out[key] = value
    return out
