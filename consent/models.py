"""Consent tables: the purpose registry, the append-only ledger, its head row,
the per-subject consent keys and the derived current state.

Nothing here holds personal data in clear: subjects are profile ids, and
personal evidence (IP, user agent, free text) is ciphertext under the
subject's consent key (`consent_subject_keys`), so destroying that key
(crypto-shredding) makes the evidence unreadable while the hash chain, which
covers the ciphertext, still verifies."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, new_id, utcnow

# LGPD Art. 7 (any purpose) and Art. 11 II (sensitive data) legal bases.
ART7_BASES = (
    "consent", "legal_obligation", "public_administration", "research", "contract", "exercise_of_rights",
    "protection_of_life", "health_protection", "legitimate_interest", "credit_protection",
)
# Art. 11: sensitive data allows consent, or a narrower set (no contract, no
# legitimate interest, no credit protection), plus fraud prevention (11 II g).
SENSITIVE_BASES = (
    "consent", "legal_obligation", "public_administration", "research", "exercise_of_rights",
    "protection_of_life", "health_protection", "fraud_prevention",
)
LEGAL_BASES = ART7_BASES + ("fraud_prevention",)
ACTIONS = ("granted", "revoked", "opted_out")
METHODS = ("record", "api", "console", "dsr")

_BASES_SQL = ", ".join(f"'{b}'" for b in LEGAL_BASES)
_ACTIONS_SQL = ", ".join(f"'{a}'" for a in ACTIONS)


class Purpose(Base):
    """A declared purpose of processing (Art. 6 I) with its legal basis.

    `version` changes only when the purpose itself changes (what is done,
    on which basis, shared with whom, sensitive or not): grants given for an
    older version stop counting (Art. 8 §6, Art. 9 §2)."""

    __tablename__ = "consent_purposes"
    __table_args__ = (CheckConstraint(f"legal_basis IN ({_BASES_SQL})", name="legal_basis"),)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    legal_basis: Mapped[str] = mapped_column(String(32))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    title_pt: Mapped[str] = mapped_column(String(200))
    title_en: Mapped[str] = mapped_column(String(200))
    description_pt: Mapped[str] = mapped_column(Text)
    description_en: Mapped[str] = mapped_column(Text)
    retention_days: Mapped[int] = mapped_column(Integer)
    notice_version: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list] = mapped_column(JSON, default=list)
    # Other names sources use for this purpose (RD Station's "communications").
    aliases: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PurposeVersion(Base):
    """Each version of a purpose as it was defined, and the notices (privacy
    notice text versions) that described it. Version 1 is in force since
    always (`effective_from` NULL), so consents collected before the
    registry existed bind to it."""

    __tablename__ = "consent_purpose_versions"
    purpose: Mapped[str] = mapped_column(ForeignKey("consent_purposes.name"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot: Mapped[dict] = mapped_column(JSON)
    notices: Mapped[list] = mapped_column(JSON, default=list)
    effective_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentSubjectKey(Base):
    """The data key that encrypts one subject's consent evidence. Separate
    from the profile's key, which a merge destroys; shredding the subject
    destroys this one."""

    __tablename__ = "consent_subject_keys"
    subject_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    """One consent event. Append-only (database triggers refuse UPDATE and
    DELETE); `hash` is SHA-256 over the canonical form of every column but
    itself and `mac`, which includes `prev_hash` and `seq`."""

    __tablename__ = "consent_ledger"
    __table_args__ = (
        CheckConstraint(f"action IN ({_ACTIONS_SQL})", name="action"),
        Index("ix_consent_ledger_subject_purpose", "subject_id", "purpose"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subject_id: Mapped[str] = mapped_column(String(36))
    purpose: Mapped[str] = mapped_column(ForeignKey("consent_purposes.name"))
    purpose_version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    legal_basis: Mapped[str] = mapped_column(String(32))
    declared_basis: Mapped[str | None] = mapped_column(String(32))  # what the source said, normalized
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    method: Mapped[str] = mapped_column(String(16))  # record | api | console | dsr
    channel: Mapped[str | None] = mapped_column(String(64))
    notice_version: Mapped[str | None] = mapped_column(String(64))
    collector: Mapped[str] = mapped_column(String(120))
    record_id: Mapped[str | None] = mapped_column(String(36), index=True)
    origin_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)  # idempotency (keyed hash)
    key_id: Mapped[str | None] = mapped_column(String(36))
    evidence_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    mac: Mapped[str] = mapped_column(String(64))


class LedgerHead(Base):
    """The single row every append locks (SELECT ... FOR UPDATE), so appends
    are serialized and sequence numbers never fork."""

    __tablename__ = "consent_ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentState(Base):
    """Current state per recorded subject id × purpose, derived from the
    ledger in the same transaction as each append (`rebuild` recomputes it).
    The most recent event wins: greatest (occurred_at, seq)."""

    __tablename__ = "consent_states"
    __table_args__ = (Index("ix_consent_states_purpose", "purpose"),)
    subject_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    purpose_version: Mapped[int] = mapped_column(Integer)
    legal_basis: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seq: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
