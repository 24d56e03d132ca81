"""The review queue: pairs the model could not decide, decided by a person.

A decision is final: "match" merges the two profiles, "not a match" records
that they are different people (a cannot-link no automatic merge crosses),
and both become labelled pairs that the next `cdp identity train` learns from.
"""
from __future__ import annotations

from sqlalchemy import func, select

from cdp import crypto
from cdp.models import CannotLink, Profile, SourceRecord, utcnow
from cdp.store import KeyStore
from identity.models import LabelledPair, ReviewItem
from identity.pairs import Edge

MATCH, NON_MATCH = "match", "non_match"


def list_items(session, status: str = "pending", limit: int = 50, offset: int = 0) -> tuple[int, list[dict]]:
    query = select(ReviewItem).where(ReviewItem.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(ReviewItem.probability.desc(), ReviewItem.id).limit(limit).offset(offset))
    return total, [summary(session, item) for item in items]


def summary(session, item: ReviewItem) -> dict:
    profiles = dict(session.execute(
        select(SourceRecord.id, SourceRecord.profile_id).where(SourceRecord.id.in_([item.record_id, item.other_record_id]))
    ).all())
    return {
        "id": item.id,
        "status": item.status,
        "probability": item.probability,
        "record_id": item.record_id,
        "other_record_id": item.other_record_id,
        "profile_id": profiles.get(item.record_id),
        "other_profile_id": profiles.get(item.other_record_id),
        "evidence": item.details,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }


EVIDENCE_TRAITS = ("full_name", "first_name", "last_name", "birth_date", "street", "street_number", "neighborhood",
                   "postal_code", "city", "state")


def evidence_values(session, keys: KeyStore, item: ReviewItem) -> dict:
    """The two records' values side by side, for an authorized reviewer only."""
    out = {}
    for side, rid in (("record", item.record_id), ("other", item.other_record_id)):
        rec = session.get(SourceRecord, rid)
        payload = crypto.decrypt_json(keys.get(rec.key_id), rec.payload_ct, "source_records", rec.id, "payload")
        values = {k: payload["traits"].get(k) for k in EVIDENCE_TRAITS if payload["traits"].get(k)}
        for ident in payload["identifiers"]:
            values.setdefault(ident["kind"], []).append(ident["value"])
        out[side] = {"source": rec.source, "values": values}
    return out


def decide(session, keys: KeyStore, settings, item_id: int, decision: str, actor: str) -> dict:
    from identity.resolve import Resolver

    if decision not in (MATCH, NON_MATCH):
        raise ValueError("decision must be 'match' or 'non_match'")
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise LookupError("no such review item")
    if item.status != "pending":
        raise ValueError(f"this item was already decided ({item.status})")
    a, b = sorted((item.record_id, item.other_record_id))
    label = session.scalar(select(LabelledPair).where(LabelledPair.record_a == a, LabelledPair.record_b == b))
    if label is None:
        session.add(LabelledPair(record_a=a, record_b=b, is_match=decision == MATCH, decided_by=actor))
    else:
        label.is_match, label.decided_by = decision == MATCH, actor
    rec, other = session.get(SourceRecord, item.record_id), session.get(SourceRecord, item.other_record_id)
    pa, pb = rec.profile_id, other.profile_id
    if decision == MATCH and pa != pb:
        resolver = Resolver(session, keys, settings)
        pa_row, pb_row = session.get(Profile, pa), session.get(Profile, pb)
        target, absorbed = sorted((pa_row, pb_row), key=lambda p: (p.created_at, p.id))
        resolver.merge_profiles(target, absorbed, Edge(item.other_record_id, "review_match", 0, 1.0,
                                                       {"review_item": item.id, "decided_by": actor}),
                                via_record=item.record_id, actor=actor)
    elif decision == NON_MATCH and pa != pb:
        x, y = sorted((pa, pb))
        if session.scalar(select(CannotLink.id).where(CannotLink.profile_a == x, CannotLink.profile_b == y)) is None:
            session.add(CannotLink(profile_a=x, profile_b=y))
    item.status, item.decided_by, item.decided_at = decision, actor, utcnow()
    session.flush()
    return summary(session, item)
