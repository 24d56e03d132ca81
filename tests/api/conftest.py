"""Fixtures for the REST API tests: keys, an ingest helper, a problem+json
checker, and data sets (one person from two sources; a merge to undo)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

PROBLEM = "application/problem+json"

RECORDS_URL = "/api/v1/sources/{source}/records"

# A valid CPF written two ways, one person in two systems.
CPF = "529.982.247-25"
CPF_DIGITS = "52998224725"


def check_problem(response, status: int) -> dict:
    """An RFC 7807 error: the status, the content type and the three members."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return body


@pytest.fixture
def problem():
    return check_problem


@pytest.fixture
def bearer():
    def make(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin(api_key, bearer) -> dict:
    """Headers carrying an admin key."""
    return bearer(api_key("admin"))


@pytest.fixture
def ingest(client, admin):
    """POST a batch; returns the response."""

    def post(source: str, records, headers: dict | None = None):
        return client.post(RECORDS_URL.format(source=source), json={"records": records}, headers=headers or admin)

    return post


@pytest.fixture
def count_rows(runtime):
    """Rows in a table, counted straight from the database."""
    from cdp import models

    tables = {
        "source_records": models.SourceRecord,
        "record_versions": models.RecordVersion,
        "profiles": models.Profile,
    }

    def count(table: str) -> int:
        with runtime.session() as session:
            return session.scalar(select(func.count()).select_from(tables[table]))

    return count


@pytest.fixture
def lookup(client, admin):
    """GET /api/v1/profiles with the given query; returns the response."""

    def get(**query):
        return client.get("/api/v1/profiles", query_string=query, headers=admin)

    return get


@pytest.fixture
def person(ingest, lookup) -> dict:
    """One person in two sources: same CPF written two ways, different e-mails."""
    first = ingest("crm", [{
        "external_id": "crm-1",
        "identifiers": {"cpf": CPF, "email": "ana.souza@example.com", "phone": "(11) 98765-4321"},
        "traits": {"full_name": "Ana Souza", "city": "São Paulo"},
    }])
    second = ingest("shop", [{
        "external_id": "shop-9",
        "identifiers": {"cpf": CPF_DIGITS, "email": "ana@example.org"},
        "traits": {"birth_date": "01/05/1990"},
    }])
    assert first.status_code == 200 and second.status_code == 200
    profiles = lookup(cpf=CPF).get_json()["profiles"]
    assert len(profiles) == 1
    return {
        "profile_id": profiles[0]["id"],
        "crm_record": first.get_json()["results"][0]["record_id"],
        "shop_record": second.get_json()["results"][0]["record_id"],
    }


@pytest.fixture
def merged(ingest, lookup) -> dict:
    """Two profiles (one known by CPF, one by e-mail) that a third record,
    carrying both, merges: a `merge` event to inspect and undo."""
    a = ingest("crm", [{"external_id": "A", "identifiers": {"cpf": CPF}}]).get_json()["results"][0]
    b = ingest("shop", [{"external_id": "B", "identifiers": {"email": "bia@example.com"}}]).get_json()["results"][0]
    by_cpf = lookup(cpf=CPF).get_json()["profiles"][0]["id"]
    by_email = lookup(email="bia@example.com").get_json()["profiles"][0]["id"]
    assert by_cpf != by_email
    c = ingest("erp", [{"external_id": "C", "identifiers": {"cpf": CPF_DIGITS, "email": "bia@example.com"}}])
    assert c.status_code == 200
    return {
        "survivor": by_cpf,
        "absorbed": by_email,
        "records": {"A": a["record_id"], "B": b["record_id"], "C": c.get_json()["results"][0]["record_id"]},
    }
