"""The API on PostgreSQL (skipped when it is not reachable; required with
CDP_REQUIRE_SERVICES=1): lookups end to end, and inputs that only
PostgreSQL refuses (NUL bytes, numeric overflow)."""
from __future__ import annotations

import threading

import pytest

PROBLEM = "application/problem+json"


@pytest.fixture
def pg_runtime(tmp_path, pg_database):
    from cdp import migrate
    from cdp.config import Settings
    from cdp.crypto import Keyring
    from cdp.store import Runtime

    settings = Settings.from_env({"CDP_INSTANCE_PATH": str(tmp_path / "pg-instance"), "DATABASE_URL": pg_database})
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    return Runtime(settings, keyring)


@pytest.fixture
def pg_app(pg_runtime):
    from cdp import create_app

    return create_app(pg_runtime.settings, pg_runtime.keyring)


@pytest.fixture
def pg_token(pg_runtime):
    from cdp.auth import create_api_key

    with pg_runtime.session() as session:
        return create_api_key(session, "pg-test", ["admin"])[1]


@pytest.fixture
def pg_client(pg_app, pg_token):
    client = pg_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {pg_token}"
    return client


def test_postgres_ingest_and_lookup_find_one_profile(pg_client):
    response = pg_client.post("/api/v1/sources/crm/records", json={"records": [
        {"external_id": "1", "identifiers": {"cpf": "529.982.247-25"}},
        {"external_id": "2", "identifiers": {"cpf": "52998224725", "email": "ana@example.com"}},
    ]})
    assert response.get_json()["counts"]["accepted"] == 2
    (profile,) = pg_client.get("/api/v1/profiles", query_string={"email": " ANA@example.com"}).get_json()["profiles"]
    assert profile["record_count"] == 2


def test_postgres_key_prefix_with_nul_byte_is_401_not_500(pg_app):
    response = pg_app.test_client().get("/api/v1/profiles?cpf=52998224725",
                                        headers={"Authorization": "Bearer cdp_ab\x00cd_secret"})
    assert response.status_code == 401
    assert response.mimetype == PROBLEM


def test_postgres_nul_byte_in_a_lookup_value_is_not_a_500(pg_client):
    response = pg_client.get("/api/v1/profiles", query_string={"email": "a\x00b@example.com"})
    assert response.status_code in (200, 422)


def test_postgres_concurrent_first_batches_of_a_new_source_all_succeed(pg_app, pg_token):
    statuses: list[int] = []

    def send(n: int):
        client = pg_app.test_client()
        response = client.post("/api/v1/sources/newsource/records", headers={"Authorization": f"Bearer {pg_token}"},
                               json={"records": [{"external_id": f"{n}-{i}", "traits": {"city": "Recife"}}
                                                 for i in range(3)]})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [200] * 4


def test_postgres_event_amount_too_large_for_the_column_rejects_only_that_record(pg_client):
    response = pg_client.post("/api/v1/sources/crm/records", json={"records": [
        {"external_id": "ok", "traits": {"city": "Recife"}},
        {"external_id": "big", "events": [{"type": "buy", "occurred_at": "2024-01-01T00:00:00Z",
                                           "amount": "999999999999999.99"}]},
    ]})
    assert response.status_code == 200
    assert [r["status"] for r in response.get_json()["results"]] == ["accepted", "rejected"]
