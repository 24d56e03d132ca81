"""Reading profiles: the decrypted view for authorized callers, and lookups
by identifier through blind indexes (no scan, no plaintext in the query)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import Event, Identifier, MergeEvent, Profile, SourceRecord
from cdp.store import KeyStore
from identity import golden as golden_mod
from identity import normalize as norm
from identity.resolve import decrypt_golden


class LookupError_(ValueError):
    """A lookup value could not be normalized; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


NORMALIZERS = {
    "email": norm.normalize_email,
    "phone": norm.normalize_phone,
    "cpf": norm.normalize_cpf,
    "cnpj": norm.normalize_cnpj,
}


def lookup(session: Session, keyring: crypto.Keyring, criteria: dict[str, str], limit: int = 50) -> list[str]:
    """Active profile ids holding every given identifier."""
    result: set[str] | None = None
    for field, raw in criteria.items():
        try:
            normalized = NORMALIZERS[field](raw)
        except norm.NormalizationError as exc:
            raise LookupError_(field, str(exc)) from None
        if normalized is None:
            raise LookupError_(field, "is empty")
        kind = field if normalized.valid else f"{field}_unverified"
        bi = keyring.blind_index(kind, normalized.value)
        ids = set(session.scalars(
            select(SourceRecord.profile_id)
            .join(Identifier, Identifier.record_id == SourceRecord.id)
            .where(Identifier.kind == kind, Identifier.blind_index == bi, SourceRecord.profile_id.is_not(None))
            .distinct()
            .limit(limit + 1)
        ))
        result = ids if result is None else result & ids
    ids = sorted(result or [])
    return ids[:limit]


def profile_view(session: Session, keys: KeyStore, profile: Profile, include_records: bool = True) -> dict:
    if profile.status != "active":
        return {"id": profile.id, "status": profile.status, "merged_into": profile.merged_into}
    golden = decrypt_golden(keys, profile)
    view = {
        "id": profile.id,
        "status": profile.status,
        "created_at": profile.created_at.isoformat(),
        "updated_at": profile.updated_at.isoformat() if profile.updated_at else None,
        "record_count": profile.record_count,
        "attributes": golden_mod.flatten(golden),
        "provenance": _public_provenance(profile.provenance or {}),
    }
    if include_records:
        records = session.scalars(
            select(SourceRecord).where(SourceRecord.profile_id == profile.id).order_by(SourceRecord.observed_at)
        ).all()
        view["sources"] = [
            {
                "source": r.source,
                "record_id": r.id,
                "external_id": crypto.decrypt_json(keys.get(r.key_id), r.external_id_ct, "source_records", r.id, "external_id"),
                "version": r.version,
                "observed_at": r.observed_at.isoformat(),
                "link_rule": r.link_rule,
            }
            for r in records
        ]
        counts = session.execute(
            select(Event.type, func.count()).where(Event.profile_id == profile.id).group_by(Event.type)
        ).all()
        view["event_counts"] = {t: n for t, n in counts}
    return view


def _public_provenance(provenance: dict) -> dict:
    out = {}
    for group, prov in provenance.items():
        if group == "identifiers":
            out["identifiers"] = {
                kind: [{"source": p["source"], "record_id": p["record_id"], "valid": p.get("valid", True)} for p in provs]
                for kind, provs in prov.items()
            }
        else:
            out[group] = {"source": prov["source"], "record_id": prov["record_id"], "observed_at": prov["observed_at"]}
    return out


def merge_history(session: Session, profile_id: str) -> list[dict]:
    events = session.scalars(
        select(MergeEvent)
        .where((MergeEvent.profile_id == profile_id) | (MergeEvent.other_profile_id == profile_id))
        .order_by(MergeEvent.id)
    ).all()
    return [
        {
            "id": e.id,
            "kind": e.kind,
            "profile_id": e.profile_id,
            "other_profile_id": e.other_profile_id,
            "record_ids": e.record_ids,
            "rule": e.rule,
            "details": e.details,
            "actor": e.actor,
            "created_at": e.created_at.isoformat(),
            "undone_at": e.undone_at.isoformat() if e.undone_at else None,
        }
        for e in events
    ]
