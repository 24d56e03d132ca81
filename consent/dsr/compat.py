"""Adapters to the parts of the platform built alongside this one (the
consent ledger, purposes, subject lineage). Each is looked up when called,
so requests work before those modules exist and use them once they do."""
from __future__ import annotations

import importlib
import importlib.util
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.models import Profile

log = logging.getLogger(__name__)

REVOKED = "revoked"  # consent.models.ACTIONS


def _module(name: str):
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def ledger_available() -> bool:
    return _module("consent.ledger") is not None


def lineage(session: Session, profile_id: str) -> set[str]:
    """The profile and every profile merged into it (consent.subjects when present)."""
    subjects = _module("consent.subjects")
    if subjects is not None and hasattr(subjects, "lineage"):
        return set(subjects.lineage(session, profile_id))
    found, frontier = {profile_id}, [profile_id]
    while frontier:
        children = list(session.scalars(select(Profile.id).where(Profile.merged_into.in_(frontier))))
        frontier = [c for c in children if c not in found]
        found.update(frontier)
    return found


def consent_history(session: Session, keys, profile_id: str) -> list[dict] | None:
    """Every consent event of the subject, or None while the ledger is not installed."""
    ledger = _module("consent.ledger")
    if ledger is None:
        return None
    return list(ledger.history(session, keys, profile_id))


def revoke_all(session: Session, keys, profile_id: str, request_id: str, purposes: list[str] | None) -> list[str]:
    """Append a revocation for each purpose the subject granted (or the ones
    named), with the request as evidence. Returns the purposes revoked."""
    ledger = _module("consent.ledger")
    if ledger is None:
        raise RuntimeError("the consent ledger is not installed")
    history = ledger.history(session, keys, profile_id)
    granted = sorted({h["purpose"] for h in history if h.get("purpose")})
    wanted = [p for p in (purposes or granted)]
    for purpose in wanted:
        ledger.append(session, keys, profile_id=profile_id, purpose=purpose, action=REVOKED,
                      legal_basis="consent", source="dsr", collector=f"dsr:{request_id}",
                      evidence={"channel": "data_subject_request", "request_id": request_id})
    return wanted


def consent_key_ids(session: Session, profile_ids: set[str]) -> list[str]:
    """Data keys of the subject's consent evidence (shredded with the subject)."""
    models = _module("consent.models")
    if models is None or not hasattr(models, "ConsentSubjectKey"):
        return []
    table = models.ConsentSubjectKey
    return list(session.scalars(select(table.key_id).where(table.subject_id.in_(list(profile_ids)))))


def declared_purposes(session: Session) -> list[dict]:
    """Purposes with legal basis, retention and recipients (consent.purposes when present)."""
    purposes = _module("consent.purposes")
    if purposes is None or not hasattr(purposes, "list_purposes"):
        return []
    try:
        rows = purposes.list_purposes(session)
    except Exception as exc:  # noqa: BLE001 - its tables may not be migrated yet
        log.warning("purposes unavailable: %s", type(exc).__name__)
        return []
    out = []
    for p in rows:
        out.append({
            "name": p.name, "legal_basis": p.legal_basis, "sensitive": bool(getattr(p, "sensitive", False)),
            "title_pt": getattr(p, "title_pt", p.name), "title_en": getattr(p, "title_en", p.name),
            "description_pt": getattr(p, "description_pt", ""), "description_en": getattr(p, "description_en", ""),
            "retention_days": getattr(p, "retention_days", None),
            "recipients": list(getattr(p, "recipients", None) or []),
            "active": bool(getattr(p, "active", True)),
        })
    return out


def survivor(session: Session, profile_id: str) -> Profile | None:
    """The profile that now stands for `profile_id`, following merges."""
    subjects = _module("consent.subjects")
    if subjects is not None and hasattr(subjects, "survivor"):
        return subjects.survivor(session, profile_id)
    profile = session.get(Profile, profile_id)
    for _ in range(64):
        if profile is None or profile.merged_into is None:
            return profile
        profile = session.get(Profile, profile.merged_into)
    return None
