"""What a subject gets back: the access / portability report (Art. 9,
18 II and V, 19), the sharing information (18 VII), the confirmation (18 I,
19 I) and the information on refusing consent (18 VIII).

A report is built once, when the request runs, and kept encrypted under the
request's key; it is handed out as JSON (portable, interoperable: §3 of
Art. 19) or as a printable pt-BR (or English) HTML page, only through
signed links that name the request and expire.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import Event, Profile, RecordVersion, SourceRecord, utcnow
from cdp.profiles import profile_view
from cdp.store import KeyStore, Runtime
from consent.dsr import catalog
from consent.dsr.compat import consent_history, declared_purposes
from consent.dsr.deadlines import brasilia
from consent.dsr.models import DsrRequest, LegalHold
from identity.resolve import decrypt_payload

LINK_TTL = timedelta(hours=24)
FORMATS = ("json", "html")

# -- extension point: segments ------------------------------------------------------------------
# Segments do not exist yet. The feature that adds them registers a function
# (session, keys, profile_ids) -> list[dict] (segment name, criteria in plain
# words, since when), and every access report lists them.
SEGMENT_PROVIDERS: list[Callable[[Session, KeyStore, list[str]], list[dict]]] = []


def register_segment_provider(fn: Callable[[Session, KeyStore, list[str]], list[dict]]) -> None:
    if fn not in SEGMENT_PROVIDERS:
        SEGMENT_PROVIDERS.append(fn)


def _controller(settings) -> dict:
    return {"name": settings.controller_name, "dpo": {"name": settings.dpo_name, "contact": settings.dpo_contact}}


def _records(session: Session, lineage: list[str]) -> list[SourceRecord]:
    if not lineage:
        return []
    return list(session.scalars(select(SourceRecord).where(SourceRecord.profile_id.in_(lineage))
                                .order_by(SourceRecord.observed_at, SourceRecord.id)))


def build_report(session: Session, keys: KeyStore, settings, req: DsrRequest, profiles: list[str],
                 lineage: list[str], sections: tuple[str, ...] | None = None) -> dict:
    """Everything held on the subject. `sections=("sharing",)` gives only
    the sharing information (Art. 18 VII)."""
    from cdp.disclosures import disclosures_for, recipients_for

    report: dict = {
        "request_id": req.id, "type": req.type, "article": catalog.REQUEST_TYPES[req.type].article,
        "generated_at": utcnow().isoformat(), "language": req.language, "controller": _controller(settings),
    }
    purposes = declared_purposes(session)
    recipients = [{"type": r.type, "id": r.id, "name": r.name} for r in recipients_for(session, lineage)]
    report["disclosures"] = disclosures_for(session, lineage)
    report["recipients"] = recipients
    report["purposes"] = purposes
    if sections == ("sharing",):
        return report
    records = _records(session, lineage)
    keys.preload([r.key_id for r in records])
    report["profiles"] = [profile_view(session, keys, session.get(Profile, pid)) for pid in profiles]
    report["source_records"] = []
    for r in records:
        dek = keys.get(r.key_id)
        versions = session.scalars(select(RecordVersion).where(RecordVersion.record_id == r.id)
                                   .order_by(RecordVersion.version)).all()
        report["source_records"].append({
            "record_id": r.id, "source": r.source,
            "external_id": crypto.decrypt_json(dek, r.external_id_ct, "source_records", r.id, "external_id"),
            "version": r.version, "observed_at": r.observed_at.isoformat(), "received_at": r.received_at.isoformat(),
            "content": decrypt_payload(keys, r),
            "previous_versions": [
                {"version": v.version, "observed_at": v.observed_at.isoformat(),
                 "content": crypto.decrypt_json(dek, v.payload_ct, "record_versions", f"{r.id}:{v.version}",
                                                "payload")} for v in versions],
        })
    report["events"] = []
    if records:
        dek_of = {r.id: keys.get(r.key_id) for r in records}
        for e in session.scalars(select(Event).where(Event.record_id.in_(list(dek_of)))
                                 .order_by(Event.occurred_at, Event.id)):
            report["events"].append({
                "type": e.type, "occurred_at": e.occurred_at.isoformat(), "source_record": e.record_id,
                "amount": str(e.amount) if e.amount is not None else None, "currency": e.currency,
                "attributes": crypto.decrypt_json(dek_of[e.record_id], e.attributes_ct, "events", e.id, "attributes")
                if e.attributes_ct else None,
            })
    history = [h for pid in profiles for h in consent_history(session, keys, pid)]
    report["consent_history"] = _jsonable(history)
    report["segments"] = [s for fn in SEGMENT_PROVIDERS for s in fn(session, keys, lineage)]
    report["retention"] = _retention(session, purposes, records)
    report["sources"] = sorted({r.source for r in records})
    return report


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _retention(session: Session, purposes: list[dict], records: list[SourceRecord]) -> dict:
    holds = session.scalars(select(LegalHold).order_by(LegalHold.id)).all()
    return {
        "by_purpose": [{"purpose": p["name"], "legal_basis": p["legal_basis"], "retention_days": p["retention_days"]}
                       for p in purposes],
        "legal_holds": [{"source": h.source, "event_type": h.event_type, "legal_basis": h.legal_basis,
                         "reason": h.reason, "retention_days": h.retention_days} for h in holds],
    }


def build_confirmation(session: Session, keys: KeyStore, settings, req: DsrRequest, profiles: list[str],
                       lineage: list[str]) -> dict:
    """Art. 19 I: the simplified answer — we do (or do not) process your data, since when, from which sources."""
    records = _records(session, lineage)
    return {
        "request_id": req.id, "type": req.type, "article": "Art. 19, I",
        "generated_at": utcnow().isoformat(), "language": req.language, "controller": _controller(settings),
        "processing": bool(records),
        "since": min((r.received_at for r in records), default=None).isoformat() if records else None,
        "sources": sorted({r.source for r in records}), "records": len(records),
        "purposes": declared_purposes(session),
    }


def build_consent_info(session: Session, settings, req: DsrRequest) -> dict:
    """Art. 18 VIII: for each purpose, whether consent is needed and what refusing it means."""
    en = req.language == "en"
    purposes = []
    for p in declared_purposes(session):
        key = p["legal_basis"] if p["legal_basis"] in catalog.REFUSAL_CONSEQUENCES else "_other"
        pt_text, en_text = catalog.REFUSAL_CONSEQUENCES[key]
        purposes.append({**p, "needs_consent": p["legal_basis"] == "consent",
                         "if_refused": en_text if en else pt_text})
    return {"request_id": req.id, "type": req.type, "article": "Art. 18, VIII", "generated_at": utcnow().isoformat(),
            "language": req.language, "controller": _controller(settings), "purposes": purposes}


# -- HTML ----------------------------------------------------------------------------------------

LABELS = {
    "pt-BR": {
        "title": "Relatório de dados pessoais", "confirmation": "Confirmação de tratamento",
        "consent_info": "Informação sobre consentimento", "sharing_info": "Informação sobre compartilhamento",
        "request": "Pedido", "generated": "Gerado em", "controller": "Controlador", "dpo": "Encarregado(a)",
        "profile": "Cadastro unificado", "attributes": "Dados", "records": "Registros por fonte",
        "source": "Fonte", "external_id": "Identificador na fonte", "observed": "Observado em", "content": "Conteúdo",
        "events": "Eventos", "consents": "Histórico de consentimento", "ledger_missing": "Registro de consentimento "
        "ainda não disponível.", "segments": "Segmentos", "none": "Nenhum.", "disclosures": "Compartilhamentos",
        "recipient": "Destinatário", "fields": "Campos", "purpose": "Finalidade", "when": "Quando",
        "purposes": "Finalidades e bases legais", "basis": "Base legal", "retention": "Retenção (dias)",
        "holds": "Dados mantidos por obrigação legal", "processing": "Tratamos dados seus",
        "yes": "Sim", "no": "Não", "since": "Desde", "sources": "Fontes", "needs_consent": "Depende de consentimento",
        "if_refused": "Se você recusar", "rights": "Você pode pedir correção, anonimização, bloqueio, eliminação, "
        "portabilidade e revogar consentimentos a qualquer momento (LGPD, art. 18), falando com o(a) encarregado(a).",
    },
    "en": {
        "title": "Personal data report", "confirmation": "Confirmation of processing",
        "consent_info": "Information about consent", "sharing_info": "Information about sharing",
        "request": "Request", "generated": "Generated at", "controller": "Controller", "dpo": "Data protection officer",
        "profile": "Unified profile", "attributes": "Data", "records": "Records by source", "source": "Source",
        "external_id": "Identifier at the source", "observed": "Observed at", "content": "Content", "events": "Events",
        "consents": "Consent history", "ledger_missing": "Consent records not available yet.",
        "segments": "Segments", "none": "None.", "disclosures": "Sharing", "recipient": "Recipient",
        "fields": "Fields", "purpose": "Purpose", "when": "When", "purposes": "Purposes and legal bases",
        "basis": "Legal basis", "retention": "Retention (days)", "holds": "Data kept by legal obligation",
        "processing": "We process your data", "yes": "Yes", "no": "No", "since": "Since", "sources": "Sources",
        "needs_consent": "Depends on consent", "if_refused": "If you refuse",
        "rights": "You may ask for correction, anonymization, blocking, deletion, portability and revoke consent at "
        "any time (LGPD Art. 18) by contacting the data protection officer.",
    },
}


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("consent.dsr", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True)
    env.filters["brasilia"] = lambda v: brasilia(datetime.fromisoformat(v)) if v else ""
    return env


def render_html(report: dict) -> str:
    language = report.get("language", "pt-BR")
    return _env().get_template("report.html").render(r=report, t=LABELS.get(language, LABELS["pt-BR"]),
                                                     lang=language)


# -- signed download links ----------------------------------------------------------------------

class _ClockSigner(TimestampSigner):
    """itsdangerous' signer with an injectable clock (links issued 'earlier' in tests and audits)."""

    def __init__(self, *args, now: datetime | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int((self._now or datetime.now(timezone.utc)).timestamp())


def _link_key(keyring: crypto.Keyring) -> bytes:
    # Derived, so the keyring's signing key is never used for two things.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cdp:dsr:download-links").derive(
        keyring.signing_key)


def _serializer(keyring: crypto.Keyring, now: datetime | None = None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_link_key(keyring), salt="dsr-download", signer=_ClockSigner,
                                  signer_kwargs={"now": now})


def make_download_token(keyring: crypto.Keyring, request_id: str, fmt: str, issued_at: datetime | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError("format must be json or html")
    return _serializer(keyring, issued_at).dumps({"r": request_id, "f": fmt})


class LinkInvalid(Exception):
    """The link is forged, for another request or format, or expired (message says which, nothing more)."""


def read_download_token(keyring: crypto.Keyring, request_id: str, token: str, fmt: str,
                        ttl: timedelta = LINK_TTL) -> None:
    try:
        data = _serializer(keyring).loads(token, max_age=int(ttl.total_seconds()))
    except SignatureExpired:
        raise LinkInvalid("link expired") from None
    except BadSignature:
        raise LinkInvalid("link invalid") from None
    if not isinstance(data, dict) or data.get("r") != request_id or data.get("f") != fmt:
        raise LinkInvalid("link invalid")


def download_links(runtime: Runtime, request_id: str) -> dict[str, dict]:
    expires = (utcnow() + LINK_TTL).isoformat()
    base = runtime.settings.public_url
    return {fmt: {"url": f"{base}/api/v1/dsr/{request_id}/download?format={fmt}&token="
                         f"{make_download_token(runtime.keyring, request_id, fmt)}",
                  "expires_at": expires} for fmt in FORMATS}


def download(runtime: Runtime, request_id: str, token: str, fmt: str) -> tuple[str, bytes, str]:
    """(content type, body, file name) for a signed link; LinkInvalid otherwise.
    Each download is written to the request's audit trail."""
    from consent.dsr.service import audit, decrypt_for

    if fmt not in FORMATS:
        raise LinkInvalid("format must be json or html")
    read_download_token(runtime.keyring, request_id, token, fmt)
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        if req is None or req.status != catalog.COMPLETED or req.result_ct is None or req.purged_at is not None:
            raise LinkInvalid("nothing to download")
        keys = runtime.keys(session)
        report = decrypt_for(keys, req, "result", req.result_ct)
        audit(session, keys, req, "subject", "downloaded", detail={"format": fmt})
    name = f"dados-pessoais-{request_id[:8]}"
    if fmt == "json":
        return "application/json", json.dumps(report, ensure_ascii=False, indent=2).encode(), f"{name}.json"
    return "text/html; charset=utf-8", render_html(report).encode(), f"{name}.html"
