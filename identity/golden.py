"""The golden record: one value per field chosen from a profile's source
records by survivorship rules, with the source of each value kept.

Fields that belong together (the parts of a name, the parts of an address)
are chosen as a group from one record, so an address is never stitched from
two different places. Identifiers keep every distinct value, best first.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

GROUPS: dict[str, tuple[str, ...]] = {
    "name": ("full_name", "first_name", "last_name"),
    "birth_date": ("birth_date",),
    "gender": ("gender",),
    "address": ("street", "street_number", "complement", "neighborhood", "postal_code", "city", "state", "country"),
}


@dataclass(frozen=True)
class RecordInfo:
    record_id: str
    source: str
    trust: int
    observed_at: datetime

    def provenance(self, completeness: int) -> dict:
        return {
            "record_id": self.record_id,
            "source": self.source,
            "trust": self.trust,
            "observed_at": self.observed_at.astimezone(timezone.utc).isoformat(),
            "completeness": completeness,
        }


def _rank(prov: dict, rules: tuple[str, ...]) -> tuple:
    """Sort key: larger is better, by the configured rule order; the record id
    breaks ties so the result never depends on arrival order."""
    key = []
    for rule in rules:
        if rule == "source_trust":
            key.append(prov["trust"])
        elif rule == "most_recent":
            key.append(prov["observed_at"])
        elif rule == "most_complete":
            key.append(prov["completeness"])
    key.append(prov["record_id"])
    return tuple(key)


def empty() -> tuple[dict, dict]:
    return {"identifiers": {}}, {"identifiers": {}}


def apply_record(golden: dict, provenance: dict, info: RecordInfo, payload: dict, rules: tuple[str, ...]) -> None:
    """Fold one source record into a golden record, in place."""
    traits = payload.get("traits", {})
    for group, fields in GROUPS.items():
        values = {f: traits[f] for f in fields if traits.get(f)}
        if not values:
            continue
        completeness = sum(len(str(v)) for v in values.values())
        candidate = info.provenance(completeness)
        current = provenance.get(group)
        if current is None or _rank(candidate, rules) > _rank(current, rules):
            golden[group] = values
            provenance[group] = candidate

    for ident in payload.get("identifiers", []):
        # An identifier that failed validation (a CPF with a bad check digit)
        # is kept apart, so it is never shown or used as the verified value.
        kind = ident["kind"] if ident.get("valid", True) else f"{ident['kind']}_unverified"
        values = golden["identifiers"].setdefault(kind, [])
        provs = provenance["identifiers"].setdefault(kind, [])
        candidate = {**info.provenance(1), "valid": ident["valid"]}
        if ident["value"] in values:
            i = values.index(ident["value"])
            if _ident_rank(candidate, rules) > _ident_rank(provs[i], rules):
                provs[i] = candidate
        else:
            values.append(ident["value"])
            provs.append(candidate)
        order = sorted(range(len(values)), key=lambda i: _ident_rank(provs[i], rules), reverse=True)
        golden["identifiers"][kind] = [values[i] for i in order]
        provenance["identifiers"][kind] = [provs[i] for i in order]


def _ident_rank(prov: dict, rules: tuple[str, ...]) -> tuple:
    return (prov.get("valid", True),) + _rank(prov, rules)


def build(records: list[tuple[RecordInfo, dict]], rules: tuple[str, ...]) -> tuple[dict, dict]:
    golden, provenance = empty()
    for info, payload in records:
        apply_record(golden, provenance, info, payload, rules)
    return golden, provenance


def flatten(golden: dict) -> dict:
    """The golden record as API consumers see it: primary values first."""
    ids = golden.get("identifiers", {})
    out: dict = {}
    out.update(golden.get("name", {}))
    if golden.get("birth_date"):
        out.update(golden["birth_date"])
    if golden.get("gender"):
        out.update(golden["gender"])
    if golden.get("address"):
        out["address"] = golden["address"]
    for kind in ("email", "phone", "cpf", "cnpj"):
        if ids.get(kind):
            out[kind] = ids[kind][0]
            out[f"{kind}s"] = list(ids[kind])
        if ids.get(f"{kind}_unverified"):
            out[f"{kind}_unverified"] = list(ids[f"{kind}_unverified"])
    custom = {k.split(":", 1)[1]: v for k, v in ids.items() if k.startswith("custom:")}
    if custom:
        out["custom_identifiers"] = custom
    return out
