"""The HTTP kit (cdp.http) against a real local server: retries, Retry-After,
clear errors, pagination helpers, and nothing secret or personal in text."""
from __future__ import annotations

import logging
import socket

import pytest

from cdp.connectors import AuthError, ConnectorError, MalformedResponse, SourceUnavailable
from cdp.http import HttpClient, RetryPolicy, link_header_next, safe_path, sign, verify_signature
from cdp.testing import FixtureServer

TOKEN = "sk_live_9f8e7d6c5b4a3210"
FAST = RetryPolicy(retries=2, backoff=0.01, retry_after_max=1)


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def client(server, **options):
    options.setdefault("retry", FAST)
    return HttpClient("acme", server.url, headers={"Authorization": f"Bearer {TOKEN}"}, secrets=[TOKEN], **options)


def test_get_json_sends_headers_and_parses(server):
    server.add("/api/ping", json={"ok": True})
    assert client(server).get_json("/api/ping") == {"ok": True}
    (seen,) = server.hits("/api/ping")
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["User-Agent"].startswith("cdp/") and "(acme)" in seen.headers["User-Agent"]


def test_429_honours_retry_after_and_5xx_backs_off(server):
    server.add("/api/x", json={"n": 1})
    server.fail("/api/x", 429, retry_after=1)
    server.fail("/api/x", 503)
    assert client(server).get_json("/api/x") == {"n": 1}
    assert [r.status for r in server.hits("/api/x")] == [429, 503, 200]


def test_retry_after_is_bounded():
    retry = RetryPolicy(retry_after_max=7).urllib3()
    assert retry.parse_retry_after("3600") == 7
    assert retry.parse_retry_after("3") == 3
    assert retry.respect_retry_after_header and 429 in retry.status_forcelist


def test_still_failing_after_retries_is_source_unavailable(server):
    server.fail("*", 500, times=10)
    with pytest.raises(SourceUnavailable) as info:
        client(server).get_json("/api/x", params={"email": "ana@example.com"})
    assert str(info.value) == ("acme: 127.0.0.1 answered HTTP 500 to GET /api/x after 3 attempt(s); "
                               "try again later")
    assert len(server.hits("/api/x")) == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_name_the_connector_and_the_hint(server, status):
    server.fail("/api/x", status)
    with pytest.raises(AuthError) as info:
        client(server, auth_hint="check api_token").get_json("/api/x")
    assert str(info.value) == f"acme: credentials rejected (HTTP {status}): check api_token"
    assert len(server.hits("/api/x")) == 1  # never retried


def test_other_4xx_is_a_connector_error_without_query_or_personal_path(server):
    with pytest.raises(ConnectorError) as info:
        client(server).get_json("/api/customers/ana@example.com/52998224725", params={"token": TOKEN})
    assert str(info.value) == "acme: GET /api/customers/***/*** answered HTTP 404"


def test_allowed_status_comes_back(server):
    assert client(server).request("GET", "/missing", allow=(404,)).status_code == 404


def test_unreachable_host_is_source_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(SourceUnavailable) as info:
        HttpClient("acme", f"http://127.0.0.1:{port}", retry=FAST).get_json("/x", params={"cpf": "52998224725"})
    text = str(info.value)
    assert text.startswith("acme: cannot reach 127.0.0.1 (") and "52998224725" not in text
    assert info.value.__suppress_context__  # no chained traceback carrying the URL


def test_body_that_is_not_json_is_malformed(server):
    server.add("/api/x", body="<html>oops</html>")
    with pytest.raises(MalformedResponse, match="^acme: GET /api/x answered HTTP 200 with a body that is not JSON$"):
        client(server).get_json("/api/x")


def test_logs_carry_no_query_strings_secrets_or_bodies(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.add("/api/x", json={"name": "Ana Beatriz Souza"})
    server.fail("/api/x", 503)
    client(server).get_json("/api/x", params={"email": "ana.souza@example.com.br", "api_key": TOKEN})
    assert "urllib3" in caplog.text and "/api/x" in caplog.text  # urllib3 did log the requests and the retry
    for needle in ("ana.souza", TOKEN, "Ana Beatriz"):
        assert needle not in caplog.text


def test_base_url_must_be_http():
    with pytest.raises(ConnectorError, match="base URL"):
        HttpClient("acme", "ftp://example.com")


def test_post_is_not_retried_unless_allowed(server):
    server.add("/api/send", method="POST", json={"ok": True})
    server.fail("/api/send", 503)
    with pytest.raises(SourceUnavailable):
        client(server).request("POST", "/api/send", json={})
    server.fail("/api/send", 503)
    with_post = RetryPolicy(retries=2, backoff=0.01, methods=frozenset({"GET", "POST"}))
    assert client(server, retry=with_post).request("POST", "/api/send", json={}).status_code == 200


# -- pagination ---------------------------------------------------------------------------------


def test_pages_by_number_with_a_page_count(server):
    for n in (1, 2, 3):
        server.add("/api/items", query={"page": n}, json={"data": [n], "meta": {"pages": 3}})
    pages = list(client(server).pages_by_number("/api/items", items="data", size=1, params={"q": "x"},
                                                last_page=lambda b: b["meta"]["pages"]))
    assert [p.items for p in pages] == [[1], [2], [3]]
    assert [p.next for p in pages] == [2, 3, None]
    assert server.hits("/api/items")[0].query == {"q": "x", "page": "1", "per_page": "1"}


def test_pages_by_number_stops_on_a_short_page_and_resumes_from_start(server):
    server.add("/api/items", query={"page": 2}, json={"data": [3, 4]})
    server.add("/api/items", query={"page": 3}, json={"data": [5]})
    pages = list(client(server).pages_by_number("/api/items", items="data", size=2, start=2))
    assert [p.items for p in pages] == [[3, 4], [5]] and pages[-1].next is None


def test_pages_by_offset(server):
    server.add("/api/rows", query={"offset": 0}, json={"rows": [1, 2], "total": 3})
    server.add("/api/rows", query={"offset": 2}, json={"rows": [3], "total": 3})
    pages = list(client(server).pages_by_offset("/api/rows", items="rows", limit=2, total=lambda b: b["total"]))
    assert [p.items for p in pages] == [[1, 2], [3]] and [p.next for p in pages] == [2, None]


def test_pages_by_cursor_token_and_next_link(server):
    server.add("/api/feed", json={"items": [1], "next": "tok2"})
    server.add("/api/feed", query={"after": "tok2"}, json={"items": [2], "next": None})
    pages = list(client(server).pages_by_cursor("/api/feed", items="items", next="next", cursor_param="after"))
    assert [p.items for p in pages] == [[1], [2]] and [p.next for p in pages] == ["tok2", None]

    server.add("/api/links", json={"items": ["a"], "links": {"next": f"{server.url}/api/links?page=2"}})
    server.add("/api/links", query={"page": "2"}, json={"items": ["b"], "links": {"next": None}})
    pages = list(client(server).pages_by_cursor("/api/links", items="items", next="links.next"))
    assert [p.items for p in pages] == [["a"], ["b"]]


def test_link_header_pagination(server):
    server.add("/api/h", json=["a"], headers={"Link": f'<{server.url}/api/h?page=2>; rel="next"'})
    server.add("/api/h", query={"page": "2"}, json=["b"])
    pages = list(client(server).pages_by_cursor("/api/h", items=lambda body: body, next=link_header_next))
    assert [p.items for p in pages] == [["a"], ["b"]]


def test_a_next_link_to_another_host_is_refused(server):
    server.add("/api/links", json={"items": [1], "next": "https://evil.example.net/steal"})
    pages = client(server).pages_by_cursor("/api/links", items="items", next="next")
    next(pages)
    with pytest.raises(MalformedResponse, match="another host"):
        next(pages)
    assert server.hits("/api/links")[0].headers["Authorization"]  # our credentials went only to our host


def test_items_that_are_not_a_list_are_malformed(server):
    server.add("/api/items", json={"data": {"not": "a list"}})
    with pytest.raises(MalformedResponse, match="expected a list at 'data'"):
        list(client(server).pages_by_number("/api/items", items="data"))


# -- helpers ------------------------------------------------------------------------------------


def test_safe_path_masks_personal_segments():
    assert safe_path("https://h/api/customers/ana@x.com/orders?email=a@b") == "/api/customers/***/orders"
    assert safe_path("https://h/api/v2/cpf/52998224725") == "/api/v2/cpf/***"
    assert safe_path("https://h/api/oms/pvt/orders/1412360518011-01") == "/api/oms/pvt/orders/1412360518011-01"


def test_verify_signature_hex_base64_and_prefix():
    import base64
    import hashlib
    import hmac

    body = b'{"id": 1}'
    hexsig = sign("s3cret-value", body)
    assert verify_signature("s3cret-value", body, hexsig)
    assert verify_signature("s3cret-value", body, "sha256=" + hexsig.upper(), prefix="sha256=")
    assert not verify_signature("s3cret-value", body + b" ", hexsig)
    assert not verify_signature("other-secret", body, hexsig)
    assert not verify_signature("s3cret-value", body, None)
    b64 = base64.b64encode(hmac.new(b"s3cret-value", body, hashlib.sha256).digest()).decode()
    assert verify_signature("s3cret-value", body, b64, encoding="base64")
