"""Database models. Personal data lives only in *_ct (ciphertext) columns;
everything else here is ids, keyed hashes, timestamps and non-personal facts.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import uuid6

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A random id (UUID4), for rows whose ids are shown to people (request
    references) or must not be guessed or dated (staff, challenges)."""
    return str(uuid.uuid4())


def new_ordered_id() -> str:
    """A time-ordered id (UUID7: creation time to the millisecond, then random
    bits), for the rows written by the hundred thousand (records, their keys,
    events, profiles). New ids go to the right end of every index on them
    instead of a random page: PostgreSQL's CPU a record fell by 8-20% at
    120k records, by about 40% at a million (README, "Time-ordered ids").
    The id tells when its row was created, which the row itself says anyway."""
    return str(uuid6.uuid7())


class UTCDateTime(TypeDecorator):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite
    drops the offset, which would make ordering and comparisons lie)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}


class DataKey(Base):
    """A per-subject data key, stored only wrapped by a KEK.

    `wrapped` is NULL once the key is destroyed (crypto-shredding)."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_ordered_id)
    kek_id: Mapped[str | None] = mapped_column(String(64), index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Source(Base):
    """A source of records. `plugin` is its connector type ("api" for records
    pushed to the API); a configured source (cdp sources add) also has its
    connector configuration: plain fields as JSON, secret fields as one
    ciphertext under the source's own data key (AAD: sources,name,secrets)."""

    __tablename__ = "sources"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    plugin: Mapped[str] = mapped_column(String(100), default="api")
    # Higher wins in golden-record survivorship.
    trust: Mapped[int] = mapped_column(Integer, default=50)
    cursor: Mapped[dict | None] = mapped_column(JSON)  # {stream: cursor}, saved after each stored batch
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    config: Mapped[dict | None] = mapped_column(JSON)  # non-secret connector configuration
    secrets_key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    secrets_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    schedule: Mapped[dict | None] = mapped_column(JSON)  # {"every_minutes": 60} or {"cron": "0 3 * * *"}
    schedule_job_id: Mapped[str | None] = mapped_column(String(64))  # the rq job of the next scheduled sync
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sync_status: Mapped[str | None] = mapped_column(String(16))  # running | ok | failed
    # While a sync runs: when it started (a second sync of the same source waits its turn).
    sync_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdentifierKind(Base):
    """Custom identifier kinds declared by mappings (customer number, a
    foreign document...), with how they match."""

    __tablename__ = "identifier_kinds"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    match: Mapped[str] = mapped_column(String(16), default="exact")  # exact | fuzzy


class Profile(Base):
    """The unified person. The golden record is ciphertext; provenance says,
    per field, which source record the value came from (no personal data)."""

    __tablename__ = "profiles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_ordered_id)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"), index=True)
    golden_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    provenance: Mapped[dict] = mapped_column(JSON, default=dict)
    # active | merged | deleted; not indexed: nearly every row is active, and SQLite without
    # statistics preferred such an index to a lookup by a chunk of profile ids.
    status: Mapped[str] = mapped_column(String(16), default="active")
    merged_into: Mapped[str | None] = mapped_column(String(36), index=True)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    records: Mapped[list["SourceRecord"]] = relationship(back_populates="profile")


# The records waiting for resolution, written out as SQL in queries too (a
# bound 'pending' would keep a generic plan off the partial index).
PENDING_SQL = "status = 'pending'"


class SourceRecord(Base):
    """One record of one source, current version. (source, external_key) is
    unique; external_key is a keyed hash because source ids are sometimes
    personal (a CPF used as customer code)."""

    __tablename__ = "source_records"
    __table_args__ = (
        UniqueConstraint("source", "external_key"),  # also the index of a source's records
        # Only the pending records, in the order the pending sweep reads them:
        # a link update (status 'resolved') then writes no entry here.
        Index("ix_source_records_pending", "received_at", "id",
              postgresql_where=text(PENDING_SQL), sqlite_where=text(PENDING_SQL)),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_ordered_id)
    source: Mapped[str] = mapped_column(ForeignKey("sources.name"))
    external_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    external_id_ct: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"), index=True)
    profile_id: Mapped[str | None] = mapped_column(ForeignKey("profiles.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary)
    # The payload's matching features (identity.features.seal), same key: read
    # instead of the payload by resolution (NULL before release 0013: from the payload).
    features_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | resolved | blocked
    # identity.features.KEYS_VERSION its identifier rows were derived with (0: unknown, re-derive).
    keys_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why this record belongs to its profile (rule name), for audits.
    link_rule: Mapped[str | None] = mapped_column(String(64))
    # The evidence behind link_rule (matched record, fields and weights; no values).
    link_details: Mapped[dict | None] = mapped_column(JSON)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    profile: Mapped[Profile | None] = relationship(back_populates="records")
    identifiers: Mapped[list["Identifier"]] = relationship(
        cascade="all, delete-orphan", back_populates="record",
        primaryjoin="SourceRecord.id == foreign(Identifier.record_id)")


class RecordVersion(Base):
    """Earlier versions of a source record (same data key as the record)."""

    __tablename__ = "record_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("source_records.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The rows of valid CPFs, written out as SQL in queries too: a bound parameter
# for 'cpf' would keep a prepared statement's generic plan off the partial index.
VALID_CPF_SQL = "kind = 'cpf' AND strong"


class Identifier(Base):
    """Blind index of one normalized identifier of a record. `strong` means
    valid enough to drive deterministic matching (a CPF that fails its check
    digit is kept with strong=False)."""

    __tablename__ = "identifiers"
    # Blind index first: candidate lookups ask for many indexes of any kind.
    # Covering (kind, strong, record_id too): the lookup of a key's holders
    # reads the index alone, not one table page per holder.
    __table_args__ = (
        Index("ix_identifiers_blind_index", "blind_index", "kind", "strong", "record_id"),
        # A profile's valid CPFs (merges must not join two): read per chunk by record id.
        Index("ix_identifiers_valid_cpf", "record_id", "blind_index",
              postgresql_where=text(VALID_CPF_SQL), sqlite_where=text(VALID_CPF_SQL)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: ten rows a record, and the server checked each against
    # `source_records` (a fifth of the cost of storing them). The rows are
    # written only with their record, in its transaction (cdp.ingest), and
    # deleted before it (consent.erasure, cdp.ingest, identity.rebuild).
    record_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    blind_index: Mapped[bytes] = mapped_column(LargeBinary(16))
    strong: Mapped[bool] = mapped_column(Boolean, default=True)

    record: Mapped[SourceRecord] = relationship(back_populates="identifiers",
                                                primaryjoin="SourceRecord.id == foreign(Identifier.record_id)")


class Event(Base):
    """Something a person did (order, complaint, form, survey answer).
    Type, time and amount are kept clear for metrics; attributes (which may
    hold free text) are ciphertext under the record's key."""

    __tablename__ = "events"
    # By profile and type in one index; no index on type alone (a handful of
    # values: SQLite without statistics preferred it to a lookup by profiles).
    __table_args__ = (Index("ix_events_profile_type", "profile_id", "type"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_ordered_id)
    record_id: Mapped[str] = mapped_column(ForeignKey("source_records.id"), index=True)
    profile_id: Mapped[str | None] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    attributes_ct: Mapped[bytes | None] = mapped_column(LargeBinary)

    # Declared so the unit of work inserts the record before its events.
    record: Mapped[SourceRecord] = relationship()


class MergeEvent(Base):
    """Every identity change, with its reason, so it can be audited and undone."""

    __tablename__ = "merge_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # merge | split
    profile_id: Mapped[str] = mapped_column(String(36), index=True)  # surviving / remaining profile
    other_profile_id: Mapped[str] = mapped_column(String(36), index=True)  # absorbed / split-off profile
    record_ids: Mapped[list] = mapped_column(JSON)  # records that moved
    rule: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    actor: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CannotLink(Base):
    """A person said these two profiles are different people: automatic
    resolution must never merge them again."""

    __tablename__ = "cannot_links"
    __table_args__ = (UniqueConstraint("profile_a", "profile_b"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    profile_a: Mapped[str] = mapped_column(String(36), index=True)
    profile_b: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
