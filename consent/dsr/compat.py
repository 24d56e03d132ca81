"""What the request steps need from the consent ledger and the purpose
catalogue (consent.ledger, consent.purposes). Lineage and survivors come
straight from consent.subjects."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.models import ConsentSubjectKey

log = logging.getLogger(__name__)

REVOKED = "revoked"  # consent.models.ACTIONS


def consent_history(session: Session, keys, profile_id: str) -> list[dict]:
    """Every consent event of the subject, evidence included (the access report shows it)."""
    from consent import ledger

    return list(ledger.history(session, keys, profile_id))


def revoke_all(session: Session, keys, profile_id: str, request_id: str, purposes: list[str] | None) -> list[str]:
    """Append a revocation for each purpose the subject granted (or the ones
    named), with the request as evidence. Returns the purposes revoked."""
    from consent import ledger

    if purposes:
        wanted = list(purposes)
    else:
        # Only the purpose names are needed: do not decrypt every evidence blob.
        history = ledger.history(session, keys, profile_id, include_evidence=False)
        wanted = sorted({h["purpose"] for h in history if h.get("purpose")})
    if not wanted:
        return []
    # One appender for every purpose: one ledger lock, one registry load, one flush.
    appender = ledger.Appender(session, keys)
    for purpose in wanted:
        appender.add(profile_id, purpose, REVOKED, method="dsr", collector=f"dsr:{request_id}",
                     declared_basis="consent", strict=True,
                     evidence={"channel": "data_subject_request", "request_id": request_id})
    appender.flush()
    return wanted


def consent_key_ids(session: Session, profile_ids: set[str]) -> list[str]:
    """Data keys of the subject's consent evidence (shredded with the subject)."""
    return list(session.scalars(select(ConsentSubjectKey.key_id)
                                .where(ConsentSubjectKey.subject_id.in_(list(profile_ids)))))


def declared_purposes(session: Session) -> list[dict]:
    """Purposes with legal basis, retention and recipients."""
    from consent.purposes import list_purposes

    try:
        rows = list_purposes(session)
    except Exception as exc:  # noqa: BLE001 - its tables may not be migrated yet
        log.warning("purposes unavailable: %s", type(exc).__name__)
        return []
    return [{
        "name": p.name, "legal_basis": p.legal_basis, "sensitive": bool(p.sensitive),
        "title_pt": p.title_pt, "title_en": p.title_en,
        "description_pt": p.description_pt, "description_en": p.description_en,
        "retention_days": p.retention_days, "recipients": list(p.recipients or []), "active": bool(p.active),
    } for p in rows]
