"""Consent receipts modelled on the Kantara Initiative Consent Receipt
Specification v1.1 (field names kept), with LGPD extensions (legal basis,
DPO, ledger anchors), signed as a compact JWS with the ledger's Ed25519 key.

The receipt names the subject by profile id only (piiPrincipalId): it holds
no personal data, so it can be handed out or stored by the subject freely."""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.config import Settings
from cdp.crypto import Keyring
from consent import ledger, signing
from consent.models import Purpose
from consent.subjects import survivor

RECEIPT_VERSION = "KI-CR-v1.1.0"
COLLECTION = {
    "record": {"pt-BR": "registro de sistema de origem", "en": "source system record"},
    "api": {"pt-BR": "integração via API", "en": "API integration"},
    "console": {"pt-BR": "atendimento (console do encarregado)", "en": "staff console"},
    "dsr": {"pt-BR": "requisição do titular", "en": "data-subject request"},
}
CONSENT_TYPE = {"consent": "EXPLICIT", "legitimate_interest": "NOT_REQUIRED_OPT_OUT"}


def _termination(days: int, basis: str, lang: str) -> str:
    if lang == "en":
        tail = " or until consent is withdrawn" if basis == "consent" else ""
        return f"Data kept for up to {days} days after the purpose ends{tail}."
    tail = " ou até a revogação do consentimento" if basis == "consent" else ""
    return f"Dados mantidos por até {days} dias após o fim da finalidade{tail}."


def build_receipt(session: Session, keyring: Keyring, settings: Settings, profile_id: str,
                  lang: str = "pt-BR") -> dict:
    """{"receipt": {...}, "jws": "..."}; raises ledger.UnknownSubject."""
    subject = survivor(session, profile_id)
    if subject is None or subject.status != "active":
        raise ledger.UnknownSubject(profile_id)
    entries = ledger.history(session, None, subject.id, include_evidence=False)
    latest: dict[str, dict] = {}
    for e in entries:  # oldest first; same precedence as the ledger's state
        cur = latest.get(e["purpose"])
        if cur is None or (e["occurred_at"], e["seq"]) > (cur["occurred_at"], cur["seq"]):
            latest[e["purpose"]] = e
    states = {s["purpose"]: s for s in ledger.states(session, subject.id)}
    purposes = {p.name: p for p in session.scalars(select(Purpose).where(Purpose.name.in_(list(latest))))}
    items, sensitive = [], []
    for name in sorted(latest):
        p, e = purposes[name], latest[name]
        if p.sensitive:
            sensitive.append(name)
        items.append({
            "purpose": p.title_en if lang == "en" else p.title_pt,
            "purposeDescription": p.description_en if lang == "en" else p.description_pt,
            "purposeCategory": [name],
            "consentType": CONSENT_TYPE.get(p.legal_basis, "NOT_REQUIRED"),
            "legalBasis": p.legal_basis,
            "purposeVersion": p.version,
            "status": e["action"],
            "allowed": states.get(name, {}).get("allowed", False),
            "statusTimestamp": e["occurred_at"],
            "noticeVersion": e["notice_version"],
            "primaryPurpose": False,
            "termination": _termination(p.retention_days, p.legal_basis, lang),
            "thirdPartyDisclosure": bool(p.recipients),
            "thirdPartyName": ", ".join(p.recipients or []) or None,
            "ledgerSeq": e["seq"],
            "ledgerHash": e["hash"],
        })
    last = max(entries, key=lambda e: e["seq"]) if entries else None
    grants = [e for e in entries if e["action"] == "granted"]
    receipt = {
        "version": RECEIPT_VERSION,
        "jurisdiction": "BR",
        "consentTimestamp": int(_epoch(max(grants, key=lambda e: e["occurred_at"])["occurred_at"])) if grants else None,
        "collectionMethod": COLLECTION.get(last["method"], {}).get(lang, last["method"]) + (f" ({last['channel']})" if last["channel"] else "")
        if last else None,
        "consentReceiptID": str(uuid.uuid4()),
        "publicKey": signing.public_key_b64(keyring),
        "language": lang,
        "piiPrincipalId": subject.id,
        "piiControllers": [{
            "piiController": settings.controller_name,
            "contact": settings.controller_contact,
            "onBehalf": False,
        }],
        "policyUrl": settings.privacy_policy_url or None,
        "services": [{"service": "CDP" if lang == "en" else "Plataforma de dados de clientes", "purposes": items}],
        "sensitive": bool(sensitive),
        "spiCat": sensitive,
        "dpo": {"name": settings.dpo_name, "contact": settings.dpo_contact, "substitute": settings.dpo_substitute},
        "regulation": "LGPD (Lei 13.709/2018)",
        "iat": int(_epoch(ledger.utcnow().isoformat())),
    }
    return {"receipt": receipt, "jws": signing.sign_jws(keyring, receipt, "kantara-cr+jws")}


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def verify_receipt(token: str, public_key: str) -> dict:
    """The signed receipt, if `token` verifies with `public_key`."""
    return signing.verify_jws(token, public_key)
