"""The golden record: one value per field chosen from a profile's source
records by survivorship rules, with the source of each value kept.

Fields that belong together (the parts of a name, the parts of an address)
are chosen as a group from one record, so an address is never stitched from
two different places. Identifiers keep every distinct value, best first.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from operator import itemgetter
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

    @cached_property
    def observed_iso(self) -> str:
        return self.observed_at.astimezone(timezone.utc).isoformat()

    def provenance(self, completeness: int) -> dict:
        return {
            "record_id": self.record_id,
            "source": self.source,
            "trust": self.trust,
            "observed_at": self.observed_iso,
            "completeness": completeness,
        }

    def rank(self, completeness: int, rules: tuple[str, ...]) -> tuple:
        """What `_rank` gives for `provenance(completeness)`, without building it."""
        return _rank({"trust": self.trust, "observed_at": self.observed_iso, "completeness": completeness,
                      "record_id": self.record_id}, rules)


def _rank(prov: dict, rules: tuple[str, ...]) -> tuple:
    """Sort key: larger is better, by the configured rule order; the record id
    breaks ties so the result never depends on arrival order."""
    return _ranker(rules)(prov)


_RULE_FIELDS = {"source_trust": "trust", "most_recent": "observed_at", "most_complete": "completeness"}


@lru_cache(maxsize=None)
def _ranker(rules: tuple[str, ...]):
    # One C-level lookup per provenance: survivorship ranks every field of every record.
    fields = [_RULE_FIELDS[rule] for rule in rules if rule in _RULE_FIELDS]
    if not fields:
        return lambda prov: (prov["record_id"],)  # itemgetter of one key gives the value, not a tuple
    return itemgetter(*fields, "record_id")


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
        current = provenance.get(group)
        if current is None or info.rank(completeness, rules) > _rank(current, rules):
            golden[group] = values
            provenance[group] = info.provenance(completeness)

    identifiers = payload.get("identifiers", [])
    if not identifiers:
        return
    record_rank = info.rank(1, rules)  # the same for each of the record's identifiers
    for ident in identifiers:
        # An identifier that failed validation (a CPF with a bad check digit)
        # is kept apart, so it is never shown or used as the verified value.
        kind = ident["kind"] if ident.get("valid", True) else f"{ident['kind']}_unverified"
        values = golden["identifiers"].setdefault(kind, [])
        provs = provenance["identifiers"].setdefault(kind, [])
        rank = (ident["valid"],) + record_rank
        if ident["value"] in values:
            i = values.index(ident["value"])
            if rank <= _ident_rank(provs[i], rules):
                continue  # the value's provenance stands: nothing moves
            provs[i] = {**info.provenance(1), "valid": ident["valid"]}
        else:
            values.append(ident["value"])
            provs.append({**info.provenance(1), "valid": ident["valid"]})
        if len(values) > 1:
            # Best first; values of equal rank (one record's two e-mails) by value, not by arrival.
            order = sorted(range(len(values)), key=lambda i: values[i])
            order.sort(key=lambda i: _ident_rank(provs[i], rules), reverse=True)
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
