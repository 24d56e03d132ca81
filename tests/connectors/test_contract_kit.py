"""The contract kit catches what it promises to catch: each broken connector
below fails the contract test aimed at its flaw, and a sound one passes
every test."""
from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from marshmallow import RAISE, Schema, ValidationError, fields

from cdp import http as cdp_http
from cdp.connectors import AuthError, Batch, SourceConnector
from cdp.testing import ConnectorContract, FixtureServer
from cdp.testing.contract import make_test_runtime

TOKEN = "kit-token-0123456789"
PAGES = {
    1: {"data": [{"id": "p1", "email": "paula.rocha@example.com.br", "updated": 1},
                 {"id": "p2", "email": "otavio.nunes@example.com.br", "updated": 2}], "pages": 2},
    2: {"data": [{"id": "p3", "email": "helena.dias@example.com.br", "updated": 3}], "pages": 2},
}


class PeopleConfig(Schema):
    class Meta:
        unknown = RAISE

    base_url = fields.Url(required=True, require_tld=False)
    api_token = fields.String(required=True, metadata={"secret": True})


class People(SourceConnector):
    """A sound connector: bearer token, page numbers, cursor = last `updated` read."""

    name = "people_kit"
    title = "People (kit test)"
    config_schema = PeopleConfig

    def __init__(self, config, *, source=None):
        super().__init__(config, source=source)
        self.http = self.http_client(self.config["base_url"], headers={"Authorization": f"Bearer {self.config['api_token']}"},
                                     auth_hint="check api_token")

    def check(self):
        self.http.get_json("/people", params={"page": 1})

    def streams(self):
        return ["people"]

    def read(self, stream: str, cursor: Any = None, batch_size: int = 100):
        last = int(cursor or 0)
        for page in self.http.pages_by_number("/people", items="data", size_param=None,
                                              last_page=lambda body: body["pages"]):
            rows = [p for p in page.items if p["updated"] > last]
            last = max([last] + [p["updated"] for p in rows])
            yield Batch([self.record(p) for p in rows], last)

    def record(self, person: dict) -> dict:
        return {"external_id": person["id"], "identifiers": {"email": person["email"]}}


class PeopleContract(ConnectorContract):
    connector_class = People
    list_path = "/people"
    check_entry_point = False
    expected_records = 3

    def config(self, base_url):
        return {"base_url": base_url, "api_token": TOKEN}

    def bad_credentials_config(self, base_url):
        return {"base_url": base_url, "api_token": "kit-wrong-token-987"}

    def serve(self, server):
        server.require(headers={"Authorization": f"Bearer {TOKEN}"})
        for n, body in PAGES.items():
            server.add("/people", query={"page": n}, json=body)


# -- broken connectors: one flaw each ------------------------------------------------------------------


class LeaksTokenInErrors(People):
    def check(self):
        raise AuthError(f"people_kit: token {self.config['api_token']} refused")


class LogsTheToken(People):
    def check(self):
        logging.getLogger("people_kit").debug("using token %s", self.config["api_token"])
        super().check()


class IgnoresTheCursor(People):
    def read(self, stream, cursor=None, batch_size=100):
        yield from super().read(stream, None, batch_size)


class BadRecords(People):
    def record(self, person):
        return {"external_id": person["id"], "traits": {"shoe_size": "42"}}


class CursorNotJson(People):
    def read(self, stream, cursor=None, batch_size=100):
        for batch in super().read(stream, cursor, batch_size):
            batch.cursor = {"at": object()}
            yield batch


class UnmarkedSecretConfig(PeopleConfig):
    api_token = fields.String(required=True)


class UnmarkedSecret(People):
    config_schema = UnmarkedSecretConfig


class CrashesOnMalformed(People):
    def read(self, stream, cursor=None, batch_size=100):
        body = json.loads(self.http.request("GET", "/people", params={"page": 1}).text)  # JSONDecodeError escapes
        yield Batch([self.record(p) for p in body["data"]], 1)


class NoRetry(People):
    def __init__(self, config, *, source=None):
        super().__init__(config, source=source)
        self.http.session.mount("http://", __import__("requests").adapters.HTTPAdapter(max_retries=0))


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=2, backoff=0.01, retry_after_max=1))


def kit_for(cls) -> PeopleContract:
    kit = PeopleContract()
    kit.connector_class = cls
    return kit


@pytest.fixture
def server():
    with FixtureServer() as srv:
        PeopleContract().serve(srv)
        yield srv


def test_a_sound_connector_passes_every_contract_test(server, tmp_path, caplog, fast):
    kit = kit_for(People)
    names = sorted(n for n in dir(ConnectorContract) if n.startswith("test_"))
    for name in names:
        test = getattr(kit, name)
        args = {"contract_server": server, "contract_runtime": make_test_runtime(tmp_path / name), "caplog": caplog}
        wanted = test.__code__.co_varnames[1:test.__code__.co_argcount]
        try:
            test(**{k: args[k] for k in wanted})
        except pytest.skip.Exception:
            assert name in ("test_registered_through_the_entry_point", "test_webhook_delivery_maps_and_bad_signature_is_refused")
        server.clear_faults()
    assert len(names) >= 17


def test_a_secret_in_an_error_message_is_caught(server, fast):
    with pytest.raises(AssertionError):
        kit_for(LeaksTokenInErrors).test_check_fails_clearly_with_bad_credentials(server)


def test_a_secret_in_the_logs_is_caught(server, caplog, fast):
    with pytest.raises(AssertionError, match="reached the logs"):
        kit_for(LogsTheToken).test_no_secret_in_logs_or_error_text(server, caplog)


def test_a_cursor_that_does_not_advance_is_caught(server, fast):
    with pytest.raises(AssertionError, match="records read again"):
        kit_for(IgnoresTheCursor).test_reading_again_from_the_last_cursor_yields_nothing_new(server)


def test_records_outside_the_common_model_are_caught(server, fast):
    with pytest.raises(ValidationError, match="shoe_size"):
        kit_for(BadRecords).test_records_conform_to_the_common_model(server)


def test_a_cursor_that_is_not_json_is_caught(server, fast):
    with pytest.raises(TypeError):
        kit_for(CursorNotJson).test_records_conform_to_the_common_model(server)


def test_an_unmarked_secret_field_is_caught():
    with pytest.raises(AssertionError, match="api_token"):
        kit_for(UnmarkedSecret).test_secret_looking_fields_are_marked_secret()


def test_an_unclear_malformed_page_error_is_caught(server, fast):
    with pytest.raises(json.JSONDecodeError):
        kit_for(CrashesOnMalformed).test_malformed_page_is_a_clear_connector_error(server)


def test_a_connector_that_does_not_retry_is_caught(server, fast):
    with pytest.raises(Exception):
        kit_for(NoRetry).test_429_with_retry_after_is_retried(server)


def test_an_unregistered_connector_is_caught():
    kit = kit_for(People)
    kit.check_entry_point = True
    with pytest.raises(AssertionError, match="entry point"):
        kit.test_registered_through_the_entry_point()


def test_fixture_server_serves_recorded_pages_and_faults(tmp_path):
    (tmp_path / "page.json").write_text('{"ok": 1}')
    (tmp_path / "routes.json").write_text(json.dumps({
        "auth": {"query": {"key": "k1"}},
        "routes": [{"path": "/a", "file": "page.json"}, {"path": "/b", "json": [1], "status": 201},
                   {"method": "POST", "path": "/c", "json": {"posted": True}}]}))
    import requests

    with FixtureServer() as srv:
        srv.load(tmp_path)
        assert requests.get(f"{srv.url}/a", params={"key": "k1"}).json() == {"ok": 1}
        assert requests.get(f"{srv.url}/a").status_code == 401
        assert requests.get(f"{srv.url}/b", params={"key": "k1"}).status_code == 201
        assert requests.post(f"{srv.url}/c", params={"key": "k1"}, data=b"x").json() == {"posted": True}
        assert requests.get(f"{srv.url}/nothing", params={"key": "k1"}).status_code == 404
        srv.fail("/a", 429, retry_after=7, times=2)
        answers = [requests.get(f"{srv.url}/a", params={"key": "k1"}) for _ in range(3)]
        assert [r.status_code for r in answers] == [429, 429, 200] and answers[0].headers["Retry-After"] == "7"
        srv.malformed("/a")
        with pytest.raises(ValueError):
            requests.get(f"{srv.url}/a", params={"key": "k1"}).json()
        assert [r.status for r in srv.hits("/c", "POST")] == [200] and srv.hits("/c")[0].body == b"x"
    with pytest.raises(RuntimeError):
        srv.url  # stopped
