"""Tables of data-subject requests, suppression, the erasure log, the
notification outbox, legal holds and the incident register.

Nothing personal is stored in clear: what a requester typed, report
contents, free-text notes and outgoing messages are ciphertext under a data
key of their own (a request key, a message key, an incident key), so they
can be shredded independently of the subject's profile. Identifiers appear
only as keyed hashes or blind indexes.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, new_id, utcnow


class DsrRequest(Base):
    __tablename__ = "dsr_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(24), default="received", index=True)
    channel: Mapped[str] = mapped_column(String(16), default="public")  # public | staff
    language: Mapped[str] = mapped_column(String(8), default="pt-BR")
    requested_by: Mapped[str] = mapped_column(String(100), default="subject")
    # The request's own data key: claims, report and notes are encrypted with it.
    key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    claims_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    claims_hash: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)  # duplicate grouping
    token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))  # requester's tracking token (SHA-256)
    duplicate_of: Mapped[str | None] = mapped_column(String(36), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # verification attempts
    scope: Mapped[list] = mapped_column(JSON, default=list)  # verified profile ids
    scope_note: Mapped[str | None] = mapped_column(String(32))  # none | ambiguous ...
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_by: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    denial_code: Mapped[str | None] = mapped_column(String(32))
    result_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # report / answer, encrypted
    package_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # what downstream systems need, encrypted
    contact_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # verified contact answers go to, encrypted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DsrChallenge(Base):
    """A one-time code sent to one contact. Only a keyed hash of the code is
    kept; `contact_index` is the blind index of the contact it went to."""

    __tablename__ = "dsr_challenges"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    contact_kind: Mapped[str] = mapped_column(String(16))  # email | phone
    contact_index: Mapped[bytes] = mapped_column(LargeBinary(16))
    contact_ct: Mapped[bytes] = mapped_column(LargeBinary)  # the contact itself, under the request key
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DsrEvent(Base):
    """Audit trail: who did what to a request, when. `detail` is non-personal;
    free text (reasons, notes) is ciphertext under the request key."""

    __tablename__ = "dsr_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    note_ct: Mapped[bytes | None] = mapped_column(LargeBinary)


class DsrStep(Base):
    """One step of a request's execution; a step's effects and its `done`
    commit in one transaction, so a crash re-runs the step, never half of it."""

    __tablename__ = "dsr_steps"
    __table_args__ = (UniqueConstraint("request_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(200))  # exception class / non-personal text
    state: Mapped[dict] = mapped_column(JSON, default=dict)  # ids only
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DsrSystem(Base):
    """Propagation to one source or destination system (Art. 18 §6)."""

    __tablename__ = "dsr_systems"
    __table_args__ = (UniqueConstraint("request_id", "system"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    system: Mapped[str] = mapped_column(String(120))  # "source:erp", "destination:crm"
    kind: Mapped[str] = mapped_column(String(16))  # source | destination
    action: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed | manual
    detail: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    confirmed_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    """A keyed hash of one normalized identifier of an erased (or blocked)
    subject; ingestion rejects records that carry it."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "hash"), Index("ix_suppressions_hash", "hash"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(80))  # cpf | cnpj | email | phone | custom:x | external:source
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    mode: Mapped[str] = mapped_column(String(16), default="erase")  # erase | block
    request_id: Mapped[str | None] = mapped_column(String(36), index=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ErasureEntry(Base):
    """Mirror of the durable erasure log (the file outside the database is
    the copy that survives a restore). Ids and keyed hashes only."""

    __tablename__ = "erasure_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entry: Mapped[dict] = mapped_column(JSON)
    reapplied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LegalHold(Base):
    """Data kept by legal obligation (invoices, tax records): erasure keeps
    the matching records and blocks them from every other use."""

    __tablename__ = "legal_holds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str | None] = mapped_column(String(100))
    event_type: Mapped[str | None] = mapped_column(String(64))
    legal_basis: Mapped[str] = mapped_column(String(40), default="legal_obligation")
    reason: Mapped[str] = mapped_column(String(300))  # the rule, e.g. "CTN art. 195: notas fiscais por 5 anos"
    retention_days: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    request_id: Mapped[str | None] = mapped_column(String(36), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # email | sms
    template: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    recipient_ct: Mapped[bytes] = mapped_column(LargeBinary)
    subject_ct: Mapped[bytes] = mapped_column(LargeBinary)
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Incident(Base):
    """A security incident (Art. 48, Res. CD/ANPD 15/2024), notified or not."""

    __tablename__ = "incidents"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    title_ct: Mapped[bytes] = mapped_column(LargeBinary)
    description_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    measures_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    data_categories: Mapped[list] = mapped_column(JSON, default=list)
    risk: Mapped[str] = mapped_column(String(16), default="undetermined")  # low | relevant | high | undetermined
    data_encrypted: Mapped[bool] = mapped_column(Boolean, default=False)  # unintelligible to the attacker (§3)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the controller learned of it
    small_agent: Mapped[bool] = mapped_column(Boolean, default=False)
    notification_due: Mapped[date] = mapped_column(Date)
    complement_due: Mapped[date] = mapped_column(Date)
    notify_decision: Mapped[str] = mapped_column(String(16), default="pending")  # pending | notify | not_required
    anpd_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subjects_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | closed
    retain_until: Mapped[date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IncidentSubject(Base):
    __tablename__ = "incident_subjects"
    __table_args__ = (UniqueConstraint("incident_id", "profile_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    found_via: Mapped[str] = mapped_column(String(32))  # disclosure_log | dsr_audit | manual


class IncidentEvent(Base):
    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
