"""The app behind a real HTTP server (werkzeug, threaded), spoken to with
urllib: what a client actually sees on the wire."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from werkzeug.serving import make_server

PROBLEM = "application/problem+json"


@pytest.fixture
def server(app):
    """Base URL of the app served on a free port; shut down afterwards."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, name="cdp-test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=30)


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed-or-raw body); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, err.headers, err.read()
    content_type = head.get("Content-Type", "")
    data = json.loads(raw) if "json" in content_type else raw
    return status, head, data


def post_json(url, payload, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return request(url, "POST", json.dumps(payload).encode(), headers)


def assert_problem(status, head, data, expected):
    assert status == expected
    assert head.get_content_type() == PROBLEM
    assert data["status"] == expected and data["title"] and data["detail"]


def test_post_batch_returns_per_record_results(server, api_key):
    status, head, data = post_json(f"{server}/api/v1/sources/crm/records", {"records": [
        {"external_id": "h-1", "identifiers": {"cpf": "529.982.247-25", "email": "ana@example.com"}},
        {"external_id": "h-2", "traits": {"birth_date": "not a date"}},
    ]}, api_key("ingest"))
    assert status == 200
    assert head.get_content_type() == "application/json"
    assert [r["status"] for r in data["results"]] == ["accepted", "rejected"]
    assert data["counts"]["accepted"] == 1 and data["counts"]["rejected"] == 1


def test_get_profile_after_ingest(server, api_key):
    post_json(f"{server}/api/v1/sources/crm/records", {"records": [
        {"external_id": "h-1", "identifiers": {"cpf": "52998224725"}, "traits": {"full_name": "Ana Souza"}}]},
        api_key("ingest"))
    reader = {"Authorization": f"Bearer {api_key('profiles:read')}"}
    status, _, found = request(f"{server}/api/v1/profiles?cpf=529.982.247-25", headers=reader)
    assert status == 200
    (summary,) = found["profiles"]
    status, _, profile = request(f"{server}/api/v1/profiles/{summary['id']}", headers=reader)
    assert status == 200
    assert profile["attributes"]["full_name"] == "Ana Souza"
    assert [(s["source"], s["external_id"]) for s in profile["sources"]] == [("crm", "h-1")]


def test_request_without_key_is_401_problem(server):
    status, head, data = request(f"{server}/api/v1/profiles?cpf=52998224725")
    assert_problem(status, head, data, 401)
    assert head["WWW-Authenticate"].startswith("Bearer")


def test_malformed_json_is_400_problem(server, api_key):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key('ingest')}"}
    status, head, data = request(f"{server}/api/v1/sources/crm/records", "POST", b'{"records": [', headers)
    assert_problem(status, head, data, 400)


def test_body_over_max_content_length_is_413_problem(server, app, api_key):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 10 * 1024 * 1024
    padding = b"x" * (limit + 1024)
    body = b'{"records": [{"external_id": "big", "traits": {"city": "' + padding + b'"}}]}'
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key('ingest')}"}
    status, head, data = request(f"{server}/api/v1/sources/crm/records", "POST", body, headers)
    assert_problem(status, head, data, 413)


def test_server_still_answers_after_an_oversized_body(server, api_key):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key('ingest')}"}
    request(f"{server}/api/v1/sources/crm/records", "POST", b"[" + b" " * (11 * 1024 * 1024) + b"]", headers)
    status, _, data = request(f"{server}/healthz")
    assert status == 200 and data["status"] == "ok"


def test_concurrent_batches_are_all_stored(server, api_key, runtime):
    from sqlalchemy import func, select

    from cdp.models import SourceRecord

    token = api_key("ingest")
    statuses: list[int] = []

    def send(n: int):
        status, _, _ = post_json(f"{server}/api/v1/sources/crm/records", {"records": [
            {"external_id": f"t{n}-{i}", "traits": {"city": "Recife"}} for i in range(5)]}, token)
        statuses.append(status)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [200] * 4
    with runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 20


def test_same_batch_posted_concurrently_is_stored_once(server, api_key, runtime):
    from sqlalchemy import func, select

    from cdp.models import SourceRecord

    token = api_key("ingest")
    batch = {"records": [{"external_id": f"s{i}", "identifiers": {"email": f"p{i}@example.com"}} for i in range(10)]}
    answers: list[tuple[int, dict]] = []

    def send():
        status, _, data = post_json(f"{server}/api/v1/sources/shop/records", batch, token)
        answers.append((status, data))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [status for status, _ in answers] == [200] * 4
    assert sum(data["counts"]["accepted"] for _, data in answers) == 10
    assert sum(data["counts"]["duplicate"] for _, data in answers) == 30
    with runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 10
