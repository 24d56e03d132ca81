"""Bearer API keys and scopes on every protected endpoint."""
from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from cdp.auth import SCOPES
from cdp.models import ApiKey, utcnow

PROFILE = "00000000-0000-0000-0000-000000000000"

# (method, path, scope it needs, JSON body)
ENDPOINTS = [
    ("POST", "/api/v1/sources/crm/records", "ingest", {"records": [{"external_id": "1", "traits": {"city": "Recife"}}]}),
    ("GET", "/api/v1/profiles?email=nobody@example.com", "profiles:read", None),
    ("GET", f"/api/v1/profiles/{PROFILE}", "profiles:read", None),
    ("GET", f"/api/v1/profiles/{PROFILE}/merges", "profiles:read", None),
    ("POST", f"/api/v1/profiles/{PROFILE}/split", "profiles:write", {"record_ids": [PROFILE]}),
    ("POST", "/api/v1/merges/1/undo", "profiles:write", None),
]
IDS = [f"{m} {p.split('?')[0]}" for m, p, _, _ in ENDPOINTS]


def call(client, method, path, body, headers=None):
    return client.open(path, method=method, json=body, headers=headers or {})


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS, ids=IDS)
def test_no_authorization_header_is_401_with_www_authenticate(client, problem, method, path, scope, body):
    response = call(client, method, path, body)
    problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS, ids=IDS)
def test_key_without_the_needed_scope_is_403_naming_the_scope(client, api_key, bearer, problem, method, path, scope, body):
    others = [s for s in SCOPES if s not in (scope, "admin")]
    response = call(client, method, path, body, bearer(api_key(*others)))
    assert scope in problem(response, 403)["detail"]


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS, ids=IDS)
def test_key_with_only_the_needed_scope_is_let_through(client, api_key, bearer, method, path, scope, body):
    response = call(client, method, path, body, bearer(api_key(scope)))
    assert response.status_code not in (401, 403), response.get_data(as_text=True)
    assert response.status_code < 500


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS, ids=IDS)
def test_admin_scope_passes_every_endpoint(client, admin, method, path, scope, body):
    response = call(client, method, path, body, admin)
    assert response.status_code not in (401, 403), response.get_data(as_text=True)
    assert response.status_code < 500


@pytest.mark.parametrize("header", [
    "Bearer",
    "Bearer ",
    "Bearer not-a-key",
    "Bearer cdp_abc",
    "Bearer cdp__",
    "Bearer cdp_zzzzzzzzzzzz_secret",
    "Bearer cdp_a\x00b_secret",
    "Basic dXNlcjpwYXNz",
    "bearer cdp_0123456789ab_secret",
])
def test_malformed_authorization_is_401(client, problem, header):
    response = client.get(f"/api/v1/profiles/{PROFILE}", headers={"Authorization": header})
    problem(response, 401)
    assert "WWW-Authenticate" in response.headers


def test_unknown_well_formed_key_is_401(client, bearer, problem):
    token = f"cdp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    problem(client.get(f"/api/v1/profiles/{PROFILE}", headers=bearer(token)), 401)


def test_known_prefix_with_wrong_secret_is_401(client, api_key, bearer, problem):
    token = api_key("admin")
    forged = token.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32)
    problem(client.get(f"/api/v1/profiles/{PROFILE}", headers=bearer(forged)), 401)


def test_revoked_key_is_401(client, runtime, api_key, bearer, problem):
    token = api_key("admin")
    prefix = token.split("_")[1]
    assert client.get(f"/api/v1/profiles/{PROFILE}", headers=bearer(token)).status_code == 404
    with runtime.session() as session:
        session.scalar(select(ApiKey).where(ApiKey.prefix == prefix)).revoked_at = utcnow()
    problem(client.get(f"/api/v1/profiles/{PROFILE}", headers=bearer(token)), 401)


def test_auth_is_checked_before_the_body_is_validated(client, problem):
    response = client.post("/api/v1/sources/crm/records", data="{not json", content_type="application/json")
    problem(response, 401)


def test_health_needs_no_key(client):
    assert client.get("/healthz").status_code == 200
