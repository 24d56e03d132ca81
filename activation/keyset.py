"""Opaque keyset-pagination cursors (profile-id order), bound to the list they page through so a
cursor of one segment or portfolio is refused by another. One home for segment and portfolio pages."""
from __future__ import annotations

import base64
import binascii
import json


def encode_cursor(scope: str, owner_id: int, after: str) -> str:
    raw = json.dumps({scope: owner_id, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(scope: str, owner_id: int, cursor: str | None) -> str | None:
    """The profile id to continue after; None without a cursor; ValueError when it is not one of `owner_id`."""
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data[scope] != owner_id or not isinstance(data["after"], str):
            raise ValueError
        return data["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValueError("not a cursor of this list") from None
