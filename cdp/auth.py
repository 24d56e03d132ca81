"""API keys: `cdp_<prefix>_<secret>`. Only a SHA-256 of the secret is stored
(the secret is 256 random bits, so a fast hash is enough), compared in
constant time."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.models import ApiKey, utcnow

SCOPES = ("ingest", "profiles:read", "profiles:write", "admin", "identity:review",
          "privacy",  # privacy: DPO staff (data-subject requests, incidents, processing records)
          "consents:read", "consents:write", "audit",  # audit: ledger verification and checkpoints
          "segments:read", "segments:write",  # segments and their members: docs/segments.md
          "portfolios:read", "portfolios:write",  # portfolios: docs/segments.md#portfolios
          "activations:read", "activations:write")  # destinations, activations, runs: docs/activation.md
PREFIX_RE = re.compile(r"[0-9a-f]{12}")  # secrets.token_hex(6)


def create_api_key(session: Session, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope(s) {unknown}; choose from {', '.join(SCOPES)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=prefix, secret_hash=_digest(secret), scopes=list(dict.fromkeys(scopes)))
    session.add(key)
    session.flush()
    return key, f"cdp_{prefix}_{secret}"


def verify_api_key(session: Session, token: str) -> ApiKey | None:
    parts = token.split("_", 2)
    # Check the prefix shape before it reaches SQL (PostgreSQL rejects NUL bytes with an error).
    if len(parts) != 3 or parts[0] != "cdp" or not PREFIX_RE.fullmatch(parts[1]):
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None)))
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(parts[2])):
        return None
    key.last_used_at = utcnow()
    return key


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
