"""Test data: records in the common model, with realistic Brazilian values."""
from __future__ import annotations

import itertools

_counter = itertools.count(1)

# Valid CPFs (check digits correct) for tests.
CPF_A = "529.982.247-25"
CPF_B = "111.444.777-35"
CPF_C = "390.533.447-05"
CPF_INVALID = "529.982.247-24"


def record(external_id: str | None = None, source: str | None = None, **parts) -> dict:
    """A record; keyword args: email, phone, cpf, cnpj, name (full name), traits, events, consents, custom.
    The source usually comes from where it is sent (URL, ingest_batch)."""
    rec: dict = {"external_id": external_id or f"ext-{next(_counter)}"}
    if source:
        rec["source"] = source
    ids = {k: parts.pop(k) for k in ("email", "phone", "cpf", "cnpj", "custom") if k in parts}
    if ids:
        rec["identifiers"] = ids
    traits = dict(parts.pop("traits", {}))
    if "name" in parts:
        traits["full_name"] = parts.pop("name")
    if traits:
        rec["traits"] = traits
    for key in ("events", "consents", "observed_at"):
        if key in parts:
            rec[key] = parts.pop(key)
    assert not parts, f"unknown factory args {parts}"
    return rec
