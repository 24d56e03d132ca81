"""Helpers for data-subject request tests: people in the database, the
codes that reached their contacts (read from the outbox, as staff would),
and verified requests."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from cdp.ingest import ingest_batch
from cdp.models import Identifier, SourceRecord

VICTIM = {"email": "helena.prado@example.com", "phone": "(11) 98888-1234", "cpf": "529.982.247-25",
          "name": "Helena Prado Siqueira"}
ATTACKER = {"email": "mallory.vaz@example.org", "phone": "(21) 97777-5555", "cpf": "111.444.777-35",
            "name": "Mallory Vaz Tavares"}


def add_person(runtime, who: dict, source: str = "crm", external_id: str | None = None, **extra) -> str:
    """Ingest one record of `who`; returns the profile id it resolved into."""
    rec = {"external_id": external_id or f"{source}-{who['cpf'][:3]}",
           "identifiers": {"email": who["email"], "phone": who["phone"], "cpf": who["cpf"]},
           "traits": {"full_name": who["name"], "city": "São Paulo"}}
    rec.update(extra)
    summary = ingest_batch(runtime, source, [rec])
    assert summary.counts()["accepted"] + summary.counts()["updated"] == 1, summary.counts()
    with runtime.session() as session:
        return session.get(SourceRecord, summary.record_ids[0]).profile_id


def outbox_for(runtime, request_id: str) -> list[dict]:
    from consent import notify

    with runtime.session() as session:
        return notify.outbox(session, runtime.keys(session), request_id, status=None)


def codes_for(runtime, request_id: str) -> dict[str, str]:
    """contact -> code, for every code message of a request."""
    out = {}
    for m in outbox_for(runtime, request_id):
        if m["template"] == "code":
            out[m["to"]] = re.search(r"\b(\d{6})\b", m["body"]).group(1)
    return out


def open_and_dispatch(runtime, type_: str, identifiers: dict, **kwargs):
    from consent.dsr import service

    opened = service.open_request(runtime, type=type_, identifiers=identifiers, **kwargs)
    service.dispatch_codes(runtime, opened.request_id)
    return opened


def verified_request(runtime, type_: str, identifiers: dict, contact: str | None = None, **kwargs):
    """Open, receive the code at `contact` (default: the e-mail given) and enter it."""
    from consent.dsr import service
    from identity.normalize import normalize_email

    opened = open_and_dispatch(runtime, type_, identifiers, **kwargs)
    codes = codes_for(runtime, opened.request_id)
    to = contact or normalize_email(identifiers["email"]).value
    result = service.verify_code(runtime, opened.request_id, opened.token, codes[to])
    assert result.verified, result
    return opened


def blind_index_hits(runtime, who: dict) -> int:
    """Identifier rows matching any of a person's identifiers."""
    from identity.normalize import normalize_cpf, normalize_email, normalize_phone

    values = [("email", normalize_email(who["email"]).value), ("phone", normalize_phone(who["phone"]).value),
              ("cpf", normalize_cpf(who["cpf"]).value)]
    with runtime.session() as session:
        total = 0
        for kind, value in values:
            bi = runtime.keyring.blind_index(kind, value)
            total += len(session.scalars(select(Identifier.id).where(Identifier.kind == kind,
                                                                     Identifier.blind_index == bi)).all())
        return total


@pytest.fixture
def victim_profile(any_runtime):
    return add_person(any_runtime, VICTIM)
