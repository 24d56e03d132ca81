"""Members pulled downstream go through the consent gate, the key's fields,
the holdout group and the disclosure log."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from activation.access import AccessError, deliver_page, set_access
from activation.metrics import holdout_bucket, refresh_all
from activation.segments import create_segment, refresh_members
from cdp.disclosures import Disclosure, Recipient
from consent.purposes import seed_defaults
from tests.activation.fixtures import NOW, load_people
from tests.consent.helpers import grant

EVERYONE = {"metric": "purchase_count", "op": "gte", "value": 0}


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _pull(client, token, sid, **params) -> tuple[list[dict], int]:
    items, pages, cursor = [], 0, None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/api/v1/segments/{sid}/members", query_string=query, headers=_auth(token))
        assert response.status_code == 200, response.json
        items += response.json["items"]
        pages += 1
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items, pages


def _setup(rt):
    people = load_people(rt)
    refresh_all(rt, churn_days=180, now=NOW)
    with rt.session() as s:
        seed_defaults(s)
    for name in ("p1", "p2", "p4", "p6"):  # p3 and p5 never consented to e-mail marketing
        grant(rt, people[name])
    with rt.session() as s:
        seg = create_segment(s, "todos", EVERYONE)
        refresh_members(s, seg, now=NOW)
    return people, seg.id


def test_members_api_gate_fields_pages_disclosures_and_revocation(runtime, client, api_key):
    people, sid = _setup(runtime)
    by_id = {v: k for k, v in people.items()}
    token = api_key("segments:read")
    assert client.get(f"/api/v1/segments/{sid}/members", headers=_auth(token)).status_code == 403  # no purpose yet
    with runtime.session() as s:
        set_access(s, token.split("_")[1], "email_marketing", ["email", "ltv"])

    items, pages = _pull(client, token, sid, limit=1)
    assert pages == 4 and [by_id[i["profile_id"]] for i in items] == sorted(
        ["p1", "p2", "p4", "p6"], key=lambda n: people[n])  # keyset order, no duplicates
    assert {by_id[i["profile_id"]]: i["email"] for i in items}["p4"] == "p4@exemplo.com.br"
    assert set(items[0]) == {"profile_id", "email", "ltv"}

    denied = client.get(f"/api/v1/segments/{sid}/members", query_string={"fields": "email,cpf"}, headers=_auth(token))
    assert denied.status_code == 403 and denied.json["field"] == "fields" and "cpf" in denied.json["detail"]
    bad = client.get(f"/api/v1/segments/{sid}/members", query_string={"cursor": "x"}, headers=_auth(token))
    assert bad.status_code == 422 and bad.json["field"] == "cursor"

    with runtime.session() as s:
        logged = s.scalars(select(Disclosure).where(Disclosure.profile_id == people["p2"])).all()
        assert [(d.recipient_type, d.purpose, d.fields) for d in logged] == [
            ("api_key", "email_marketing", ["email", "ltv", "profile_id"])]
        assert s.scalar(select(func.count()).select_from(Disclosure)
                        .where(Disclosure.profile_id == people["p3"])) == 0  # never disclosed

    grant(runtime, people["p2"], action="revoked")
    items, _ = _pull(client, token, sid, limit=100, fields="email")
    assert {by_id[i["profile_id"]] for i in items} == {"p1", "p4", "p6"}  # the revoked subject is gone


def test_holdout_group_is_never_activated(any_runtime):
    people, sid = _setup(any_runtime)
    from activation.models import Segment

    granted = {people[n] for n in ("p1", "p2", "p4", "p6")}
    # A holdout just above the lowest bucket: at least one granted member is held out.
    pct = min(holdout_bucket(pid) for pid in granted) + 1
    expected = {pid for pid in granted if holdout_bucket(pid) >= pct}
    assert expected < granted
    with any_runtime.session() as s:
        seg = s.get(Segment, sid)
        seg.holdout_pct = pct
        items, cursor = deliver_page(s, any_runtime.keys(s), seg, Recipient("destination", "t", "teste"),
                                     "email_marketing", ["email"], limit=100)
    assert {i["profile_id"] for i in items} == expected and cursor is None
    # the bucket is a fixed function of the id (stable across refreshes and processes)
    assert holdout_bucket("00000000-0000-0000-0000-000000000000") == holdout_bucket(
        "00000000-0000-0000-0000-000000000000")


def test_access_declaration_is_validated(runtime, api_key):
    token = api_key("segments:read")
    with runtime.session() as s:
        seed_defaults(s)
        with pytest.raises(AccessError) as err:
            set_access(s, token.split("_")[1], "no_such_purpose", ["email"])
        assert err.value.field == "purpose"
        with pytest.raises(AccessError) as err:
            set_access(s, token.split("_")[1], "email_marketing", ["email", "senha"])
        assert err.value.field == "fields"
