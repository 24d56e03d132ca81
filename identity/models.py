"""Tables of identity resolution beyond the core: trained match models, the
review queue and the labelled pairs that people's decisions produce."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cdp.models import Base, UTCDateTime, utcnow


class MatchModel(Base):
    """Fellegi–Sunter parameters (m, u, prior): no personal data."""

    __tablename__ = "match_models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    params: Mapped[dict] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewItem(Base):
    """A pair scored between the review and match thresholds, waiting for a
    person. Evidence is the field-level explanation (levels and weights);
    values are decrypted only when an authorized person opens the item."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("record_id", "other_record_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("source_records.id", ondelete="CASCADE"), index=True)
    other_record_id: Mapped[str] = mapped_column(ForeignKey("source_records.id", ondelete="CASCADE"), index=True)
    probability: Mapped[float] = mapped_column(Float)
    details: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | match | non_match | stale
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelledPair(Base):
    """A person's decision on two records: training data for the model, and
    a rule automatic resolution never overrides."""

    __tablename__ = "labelled_pairs"
    __table_args__ = (UniqueConstraint("record_a", "record_b"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_a: Mapped[str] = mapped_column(ForeignKey("source_records.id", ondelete="CASCADE"), index=True)
    record_b: Mapped[str] = mapped_column(ForeignKey("source_records.id", ondelete="CASCADE"), index=True)
    is_match: Mapped[bool] = mapped_column(Boolean)
    decided_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RebuildKey(Base):
    """A batch rebuild's ranked keys: for each key, its first cap+1 holders
    with their rank in received order (the record ranked n had n-1 earlier
    holders when it arrived). Phase 1 finds each record's candidate pairs
    with one self-join on this table; a common key's crowd is never read.
    Blind indexes and ids only."""

    __tablename__ = "rebuild_keys"
    __table_args__ = (Index("ix_rebuild_keys_run_record", "run", "record_id"),)
    run: Mapped[str] = mapped_column(String(36), primary_key=True)
    blind_index: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(64))
    strong: Mapped[bool] = mapped_column(Boolean)


class RebuildEdge(Base):
    """A decided pair found by a batch rebuild (phase 1, parallel jobs);
    phase 2 reads them in record order to form the clusters. Ids, rules and
    weights only."""

    __tablename__ = "rebuild_edges"
    __table_args__ = (Index("ix_rebuild_edges_run_order", "run", "record_order", "record_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run: Mapped[str] = mapped_column(String(36))
    record_id: Mapped[str] = mapped_column(String(36))
    record_order: Mapped[datetime] = mapped_column(UTCDateTime)  # the record's received_at: edges stream in order
    other_id: Mapped[str] = mapped_column(String(36))
    rule: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    review: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[dict] = mapped_column(JSON)


class RebuildFeature(Base):
    """A batch rebuild's copy of one record's matching features, encrypted
    with the run's own data key (its id is the run's id; destroyed when the
    run ends). Phase 1 derives each record's features once, in its own slice;
    the later slices that compare it read this small copy instead of
    decrypting and normalizing its payload again (a fifth of the cost)."""

    __tablename__ = "rebuild_features"
    run: Mapped[str] = mapped_column(String(36), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    features_ct: Mapped[bytes] = mapped_column(LargeBinary)
