"""Reclame Aqui complaints (an assumed REST shape, see plugins/reclame_aqui.py)
on recorded pages on the local fixture server: the contract kit, the mapping
of statuses/ratings/partial consumers, pagination and the cursor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdp.testing import ConnectorContract, FixtureServer, read_all
from plugins.reclame_aqui import ReclameAqui

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reclame_aqui"
TOKEN = json.loads((FIXTURES / "routes.json").read_text())["auth"]["headers"]["Authorization"].split(" ", 1)[1]
PATH = "/v1/companies/loja-exemplo-ltda/complaints"


def config(base_url: str, **overrides) -> dict:
    return {"company_id": "loja-exemplo-ltda", "api_token": TOKEN, "base_url": base_url, "per_page": 2, **overrides}


class TestReclameAquiContract(ConnectorContract):
    connector_class = ReclameAqui
    fixtures = FIXTURES
    list_path = PATH
    expected_records = 4

    def config(self, base_url):
        return config(base_url)

    def bad_credentials_config(self, base_url):
        return config(base_url, api_token="wrong-token-000000000")


@pytest.fixture
def ra(fast_retries):
    with FixtureServer() as server:
        server.load(FIXTURES)
        yield server


def complaints(server, **overrides):
    batches, cursors = read_all(ReclameAqui(config(server.url, **overrides)))
    return [r for b in batches["complaints"] for r in b.records], batches, cursors


def test_complaint_events_carry_status_rating_and_would_return(ra):
    records, _, _ = complaints(ra)
    by_id = {r["external_id"]: r for r in records}
    unanswered = by_id["complaint:Rk9pX2b8aQ1"]["events"][0]
    assert unanswered["type"] == "complaint" and unanswered["occurred_at"] == "2026-03-01T13:12:00+00:00"
    assert unanswered["attributes"]["status"] == "nao_respondida"
    assert unanswered["attributes"]["rating"] is None and unanswered["attributes"]["would_do_business_again"] is None
    solved = by_id["complaint:Rk9pX2b8aQ3"]["events"][0]["attributes"]
    assert (solved["status"], solved["rating"], solved["would_do_business_again"]) == ("resolvida", 8, True)
    unsolved = by_id["complaint:Rk9pX2b8aQ4"]["events"][0]["attributes"]
    assert (unsolved["status"], unsolved["resolved"], unsolved["would_do_business_again"]) == ("respondida", False, False)
    assert "chegou com o braço quebrado" in unanswered["attributes"]["description"]


def test_partial_consumers_keep_what_they_have(ra):
    records, _, _ = complaints(ra)
    by_id = {r["external_id"]: r for r in records}
    assert by_id["complaint:Rk9pX2b8aQ1"]["identifiers"] == {"email": "miguel.rezende@icloud.com"}
    assert by_id["complaint:Rk9pX2b8aQ2"]["identifiers"] == {"phone": "(92) 95749-1186"}
    assert by_id["complaint:Rk9pX2b8aQ2"]["traits"] == {"full_name": "Emilly Caldeira"}


def test_pages_follow_total_pages_and_cursor_sends_updated_since(ra):
    _, batches, cursors = complaints(ra)
    assert [len(b.records) for b in batches["complaints"]] == [2, 2]
    assert [h.query["page"] for h in ra.hits(PATH)] == ["1", "2"]
    assert ra.hits(PATH)[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert cursors["complaints"] == {"since": "2026-03-04T14:00:00+00:00", "seen": ["Rk9pX2b8aQ4"]}
    list(ReclameAqui(config(ra.url)).read("complaints", cursors["complaints"]))
    assert ra.hits(PATH)[-1].query["updated_since"] == "2026-03-04T14:00:00+00:00"


def test_unknown_status_and_bad_rating_are_row_errors_not_lost_complaints(ra):
    connector = ReclameAqui(config(ra.url))
    record, problems = connector.map_complaint({
        "id": "X1", "title": "t", "description": "d", "status": "Congelada", "created_at": "2026-03-01T10:00:00Z",
        "updated_at": "2026-03-01T10:00:00Z", "consumer": {"name": "Théo Pinto"},
        "evaluation": {"score": 11, "would_do_business_again": None}})
    assert record["events"][0]["attributes"]["status"] == "outro"
    assert record["events"][0]["attributes"]["rating"] is None
    assert set(problems) == {"status", "evaluation.score"}
