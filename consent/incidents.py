"""The security incident register (LGPD Art. 48; Res. CD/ANPD 15/2024).

Every incident is recorded, notified or not, and kept at least five years.
The communication to the ANPD and the subjects is due within 3 business
days of learning that personal data was affected (doubled for small
agents), complementary information within 20 business days. Business days
are Brazilian: weekends and national holidays (the `holidays` package)
don't count. Affected subjects are found from the disclosure log (what went
to a compromised recipient in a window) and from the request audit trail
(report downloads in the window, e.g. a leaked link). Whether the data was
unintelligible to the attacker (encrypted) is recorded: Art. 48 §3 counts it
in the controller's favour.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from functools import lru_cache

import holidays
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import new_id, utcnow
from cdp.store import Runtime
from consent.dsr.deadlines import brasilia, local_date
from consent.dsr.models import DsrEvent, DsrRequest, Incident, IncidentEvent, IncidentSubject

NOTIFY_BUSINESS_DAYS = 3
COMPLEMENT_BUSINESS_DAYS = 20
RETENTION_YEARS = 5
RISKS = ("low", "relevant", "high", "undetermined")
DECISIONS = ("notify", "not_required")
DATA_CATEGORIES = ("identification", "contact", "documents", "address", "financial", "purchase_history",
                   "location", "credentials", "children", "sensitive_health", "sensitive_biometric",
                   "sensitive_other", "other")


class IncidentError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IncidentNotFound(LookupError):
    pass


@lru_cache(maxsize=64)
def _brazil(year: int):
    return holidays.Brazil(years=year)


def is_business_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _brazil(day.year)


def business_days_after(start: date, n: int) -> date:
    """The n-th Brazilian business day after `start` (the start day itself does not count)."""
    day, counted = start, 0
    while counted < n:
        day += timedelta(days=1)
        if is_business_day(day):
            counted += 1
    return day


def deadlines(detected_at: datetime, small_agent: bool) -> tuple[date, date]:
    factor = 2 if small_agent else 1
    start = local_date(detected_at)
    return (business_days_after(start, NOTIFY_BUSINESS_DAYS * factor),
            business_days_after(start, COMPLEMENT_BUSINESS_DAYS * factor))


def _aad(incident_id: str, name: str) -> tuple[str, str, str]:
    return ("incidents", incident_id, name)


def _event(session: Session, incident: Incident, actor: str, action: str, detail: dict | None = None) -> None:
    session.add(IncidentEvent(incident_id=incident.id, at=utcnow(), actor=actor, action=action, detail=detail or {}))


def _require(session: Session, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound("no such incident")
    return incident


def _check(categories, risk) -> None:
    unknown = [c for c in categories or [] if c not in DATA_CATEGORIES]
    if unknown:
        raise IncidentError("data_categories", f"unknown: {', '.join(unknown)}; use {', '.join(DATA_CATEGORIES)}")
    if risk not in RISKS:
        raise IncidentError("risk", f"must be one of {', '.join(RISKS)}")


def create_incident(runtime: Runtime, *, title: str, detected_at: datetime, actor: str, description: str | None = None,
                    occurred_at: datetime | None = None, data_categories: list[str] | None = None,
                    risk: str = "undetermined", data_encrypted: bool = False, measures: str | None = None,
                    small_agent: bool | None = None) -> dict:
    if not title or not title.strip() or len(title) > 300:
        raise IncidentError("title", "give a short title (up to 300 characters)")
    if detected_at.tzinfo is None:
        raise IncidentError("detected_at", "needs a time zone")
    _check(data_categories, risk)
    small = runtime.settings.small_agent if small_agent is None else small_agent
    notify_by, complement_by = deadlines(detected_at, small)
    with runtime.session() as session:
        keys = runtime.keys(session)
        key_id, dek = keys.create()
        incident_id = new_id()
        incident = Incident(
            id=incident_id, key_id=key_id, title_ct=crypto.encrypt_json(dek, title, *_aad(incident_id, "title")),
            description_ct=crypto.encrypt_json(dek, description, *_aad(incident_id, "description"))
            if description else None,
            measures_ct=crypto.encrypt_json(dek, measures, *_aad(incident_id, "measures")) if measures else None,
            data_categories=sorted(set(data_categories or [])), risk=risk, data_encrypted=data_encrypted,
            occurred_at=occurred_at, detected_at=detected_at, small_agent=small, notification_due=notify_by,
            complement_due=complement_by, notify_decision="pending", status="open",
            retain_until=date(local_date(detected_at).year + RETENTION_YEARS, 12, 31),
            created_by=actor, created_at=utcnow(), updated_at=utcnow())
        session.add(incident)
        session.flush()
        _event(session, incident, actor, "created", {"risk": risk, "categories": incident.data_categories})
    return get_incident(runtime, incident_id)


def update_incident(runtime: Runtime, incident_id: str, *, actor: str, description: str | None = None,
                    measures: str | None = None, data_categories: list[str] | None = None, risk: str | None = None,
                    data_encrypted: bool | None = None, occurred_at: datetime | None = None) -> dict:
    with runtime.session() as session:
        incident = _require(session, incident_id)
        _check(data_categories, risk or incident.risk)
        dek = runtime.keys(session).get(incident.key_id)
        changed = []
        if description is not None:
            incident.description_ct = crypto.encrypt_json(dek, description, *_aad(incident.id, "description"))
            changed.append("description")
        if measures is not None:
            incident.measures_ct = crypto.encrypt_json(dek, measures, *_aad(incident.id, "measures"))
            changed.append("measures")
        if data_categories is not None:
            incident.data_categories = sorted(set(data_categories))
            changed.append("data_categories")
        if risk is not None:
            incident.risk = risk
            changed.append("risk")
        if data_encrypted is not None:
            incident.data_encrypted = data_encrypted
            changed.append("data_encrypted")
        if occurred_at is not None:
            incident.occurred_at = occurred_at
            changed.append("occurred_at")
        incident.updated_at = utcnow()
        _event(session, incident, actor, "updated", {"fields": changed})
    return get_incident(runtime, incident_id)


def find_affected(runtime: Runtime, incident_id: str, *, actor: str, recipients: list[tuple[str, str]] | None = None,
                  since: datetime | None = None, until: datetime | None = None,
                  profile_ids: list[str] | None = None, include_report_downloads: bool = False) -> dict:
    """Add the affected subjects: profiles disclosed to the compromised
    recipients (disclosure log) within the window, profiles whose reports
    were downloaded in the window (request audit trail), and any named by hand."""
    from cdp.disclosures import profiles_disclosed_to

    with runtime.session() as session:
        incident = _require(session, incident_id)
        found: dict[str, str] = {}
        for pid in profiles_disclosed_to(session, recipients or [], since, until):
            found.setdefault(pid, "disclosure_log")
        if include_report_downloads:
            query = (select(DsrRequest.scope).join(DsrEvent, DsrEvent.request_id == DsrRequest.id)
                     .where(DsrEvent.action == "downloaded"))
            if since is not None:
                query = query.where(DsrEvent.at >= since)
            if until is not None:
                query = query.where(DsrEvent.at <= until)
            for scope in session.scalars(query):
                for pid in scope or []:
                    found.setdefault(pid, "dsr_audit")
        for pid in profile_ids or []:
            found.setdefault(pid, "manual")
        have = set(session.scalars(select(IncidentSubject.profile_id).where(IncidentSubject.incident_id == incident_id)))
        added = 0
        for pid, via in sorted(found.items()):
            if pid not in have:
                session.add(IncidentSubject(incident_id=incident_id, profile_id=pid, found_via=via))
                added += 1
        _event(session, incident, actor, "affected_subjects_added",
               {"added": added, "recipients": len(recipients or []), "window": [brasilia(since), brasilia(until)]})
    return get_incident(runtime, incident_id)


def decide(runtime: Runtime, incident_id: str, *, actor: str, decision: str, reason: str) -> dict:
    """Record whether the incident must be communicated (may bring relevant risk or damage) and why."""
    if decision not in DECISIONS:
        raise IncidentError("decision", "must be notify or not_required")
    if not reason or not reason.strip():
        raise IncidentError("reason", "explain the decision (it is kept for the ANPD)")
    with runtime.session() as session:
        incident = _require(session, incident_id)
        incident.notify_decision = decision
        incident.updated_at = utcnow()
        dek = runtime.keys(session).get(incident.key_id)
        session.add(IncidentEvent(incident_id=incident.id, at=utcnow(), actor=actor, action="decision",
                                  detail={"decision": decision, "reason_ct": crypto.encrypt_json(
                                      dek, reason, *_aad(incident.id, f"decision:{new_id()}")).hex()}))
    return get_incident(runtime, incident_id)


def record_notification(runtime: Runtime, incident_id: str, *, actor: str, anpd: bool = False,
                        subjects: bool = False, at: datetime | None = None) -> dict:
    if not anpd and not subjects:
        raise IncidentError("anpd", "say who was notified (anpd and/or subjects)")
    when = at or utcnow()
    with runtime.session() as session:
        incident = _require(session, incident_id)
        if anpd:
            incident.anpd_notified_at = when
        if subjects:
            incident.subjects_notified_at = when
        incident.notify_decision = "notify"
        incident.updated_at = utcnow()
        _event(session, incident, actor, "notified", {"anpd": anpd, "subjects": subjects, "at": when.isoformat()})
    return get_incident(runtime, incident_id)


def close_incident(runtime: Runtime, incident_id: str, *, actor: str) -> dict:
    with runtime.session() as session:
        incident = _require(session, incident_id)
        if incident.notify_decision == "pending":
            raise IncidentError("notify_decision", "decide whether to notify before closing")
        incident.status, incident.updated_at = "closed", utcnow()
        _event(session, incident, actor, "closed")
    return get_incident(runtime, incident_id)


def _view(session: Session, keys, incident: Incident, include_text: bool) -> dict:
    today = local_date(utcnow())
    affected = session.scalar(select(func.count()).select_from(IncidentSubject)
                              .where(IncidentSubject.incident_id == incident.id))
    out = {
        "id": incident.id, "status": incident.status, "risk": incident.risk,
        "data_categories": list(incident.data_categories), "data_encrypted": incident.data_encrypted,
        "occurred_at": brasilia(incident.occurred_at), "detected_at": brasilia(incident.detected_at),
        "small_agent": incident.small_agent, "notification_due": incident.notification_due.isoformat(),
        "complement_due": incident.complement_due.isoformat(), "notify_decision": incident.notify_decision,
        "anpd_notified_at": brasilia(incident.anpd_notified_at),
        "subjects_notified_at": brasilia(incident.subjects_notified_at),
        "notification_overdue": incident.notify_decision != "not_required" and incident.anpd_notified_at is None
        and today > incident.notification_due,
        "affected_subjects": affected, "retain_until": incident.retain_until.isoformat(),
        "created_by": incident.created_by,
    }
    if include_text:
        dek = keys.get(incident.key_id)
        out["title"] = crypto.decrypt_json(dek, incident.title_ct, *_aad(incident.id, "title"))
        out["description"] = (crypto.decrypt_json(dek, incident.description_ct, *_aad(incident.id, "description"))
                              if incident.description_ct else None)
        out["measures"] = (crypto.decrypt_json(dek, incident.measures_ct, *_aad(incident.id, "measures"))
                           if incident.measures_ct else None)
        out["events"] = [{"at": brasilia(e.at), "actor": e.actor, "action": e.action,
                          "detail": {k: v for k, v in e.detail.items() if not k.endswith("_ct")}}
                         for e in session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == incident.id)
                                                  .order_by(IncidentEvent.id))]
    return out


def get_incident(runtime: Runtime, incident_id: str) -> dict:
    with runtime.session() as session:
        return _view(session, runtime.keys(session), _require(session, incident_id), True)


def list_incidents(runtime: Runtime, status: str | None = None) -> list[dict]:
    with runtime.session() as session:
        query = select(Incident).order_by(Incident.detected_at.desc())
        if status:
            query = query.where(Incident.status == status)
        return [_view(session, None, i, False) for i in session.scalars(query)]


def affected_profiles(runtime: Runtime, incident_id: str) -> list[dict]:
    with runtime.session() as session:
        _require(session, incident_id)
        return [{"profile_id": s.profile_id, "found_via": s.found_via}
                for s in session.scalars(select(IncidentSubject).where(IncidentSubject.incident_id == incident_id)
                                         .order_by(IncidentSubject.profile_id))]


def export_incident(runtime: Runtime, incident_id: str, fmt: str = "json") -> str:
    """What the communication to the ANPD needs (Res. 15/2024 art. 6), pt-BR
    labels, JSON or CSV (one field per row). Subjects are counted, not listed."""
    if fmt not in ("json", "csv"):
        raise IncidentError("format", "must be json or csv")
    s = runtime.settings
    view = get_incident(runtime, incident_id)
    form = {
        "controlador": s.controller_name, "encarregado": s.dpo_name, "contato_encarregado": s.dpo_contact,
        "agente_de_pequeno_porte": view["small_agent"], "titulo": view["title"], "descricao": view["description"],
        "data_ocorrencia": view["occurred_at"], "data_ciencia": view["detected_at"],
        "prazo_comunicacao": view["notification_due"], "prazo_complementacao": view["complement_due"],
        "categorias_de_dados": view["data_categories"], "titulares_afetados": view["affected_subjects"],
        "dados_ininteligiveis_criptografados": view["data_encrypted"], "risco": view["risk"],
        "medidas_adotadas": view["measures"], "decisao_comunicacao": view["notify_decision"],
        "comunicado_anpd_em": view["anpd_notified_at"], "comunicado_titulares_em": view["subjects_notified_at"],
        "guardar_ate": view["retain_until"],
    }
    if fmt == "json":
        return json.dumps(form, ensure_ascii=False, indent=2)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["campo", "valor"])
    for key, value in form.items():
        writer.writerow([key, ";".join(value) if isinstance(value, list) else ("" if value is None else value)])
    return out.getvalue()


def purge_expired(runtime: Runtime, today: date | None = None) -> int:
    """Remove incidents past their five-year retention (never before)."""
    today = today or local_date(utcnow())
    with runtime.session() as session:
        expired = list(session.scalars(select(Incident).where(Incident.retain_until < today)))
        keys = runtime.keys(session)
        for incident in expired:
            for model in (IncidentSubject, IncidentEvent):
                for row in session.scalars(select(model).where(model.incident_id == incident.id)):
                    session.delete(row)
            keys.destroy([incident.key_id])
            session.delete(incident)
        return len(expired)
