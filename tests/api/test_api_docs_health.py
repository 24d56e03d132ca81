"""The OpenAPI document, the offline Swagger UI, and the health check."""
from __future__ import annotations

import json
import re

import pytest

PATHS = {
    "/api/v1/sources/{source}/records": "post",
    "/api/v1/profiles": "get",
    "/api/v1/profiles/{profile_id}": "get",
    "/api/v1/profiles/{profile_id}/merges": "get",
    "/api/v1/profiles/{profile_id}/split": "post",
    "/api/v1/merges/{merge_id}/undo": "post",
    "/healthz": "get",
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return json.loads(response.get_data(as_text=True))


def test_openapi_document_is_openapi_3(spec):
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"]


@pytest.mark.parametrize(("path", "method"), sorted(PATHS.items()))
def test_openapi_lists_every_endpoint(spec, path, method):
    assert method in spec["paths"][path]


def test_openapi_declares_the_bearer_scheme_for_every_operation(spec):
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert {"bearer": []} in spec["security"]


def test_openapi_marks_health_as_public(spec):
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_openapi_documents_the_record_model(spec):
    record = spec["components"]["schemas"]["Record"]
    assert {"external_id", "identifiers", "traits", "events", "consents"} <= set(record["properties"])


def test_openapi_needs_no_key(client):
    assert client.get("/openapi.json").status_code == 200


def test_docs_page_loads_swagger_ui_from_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in html
    assert "/openapi.json" in html


def test_docs_page_loads_nothing_from_a_cdn(client):
    html = client.get("/docs").get_data(as_text=True)
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/docs/assets/"), url


@pytest.mark.parametrize("asset", ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"])
def test_swagger_ui_assets_are_served_offline(client, asset):
    response = client.get(f"/docs/assets/{asset}")
    assert response.status_code == 200
    assert len(response.data) > 1000


def test_swagger_ui_bundle_is_javascript(client):
    response = client.get("/docs/assets/swagger-ui-bundle.js")
    assert response.mimetype in ("text/javascript", "application/javascript")


def test_unknown_docs_asset_is_404_problem(client, problem):
    problem(client.get("/docs/assets/nope.js"), 404)


def test_docs_assets_do_not_escape_their_folder(client):
    assert client.get("/docs/assets/../../cdp/__init__.py").status_code == 404
    assert client.get("/docs/assets/%2e%2e/%2e%2e/pyproject.toml").status_code == 404


# -- health --------------------------------------------------------------------------

def test_health_without_auth_reports_ok_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"


def test_health_without_redis_reports_in_process_jobs(client):
    assert client.get("/healthz").get_json()["jobs"] == "in-process"


def test_health_rejects_other_methods_with_a_problem(client, problem):
    problem(client.post("/healthz"), 405)
