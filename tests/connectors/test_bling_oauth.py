"""Bling v3 OAuth 2: an expired access token is renewed with the refresh
token (HTTP Basic client_id:client_secret), the rotated pair is stored
encrypted in the configured source *before* the request is retried, and a
refused refresh token (invalid_grant) stops the sync with a named error and
the cursor where it was. Against the Bling stand-in on the kit's local
server, with a token endpoint that rotates like Bling's."""
from __future__ import annotations

import base64
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

from cdp.connectors import ConnectorError
from cdp.models import Source
from cdp.sources import add_source, build_connector, sync_source
from cdp.testing import FixtureServer
from plugins.bling import Bling, BlingReauthorize
from tests.connectors.test_bling import TOKEN, serve_bling

CLIENT_ID, CLIENT_SECRET = "cdp-test-client-7f3a", "client-SECRET-5b8e1d0c9a"
FIRST_REFRESH = "refresh-ONE-0d6a4c1e77b2"
TOKEN_PATH = "/Api/v3/oauth/token"


class TokenEndpoint:
    """Bling's token endpoint: every refresh rotates the refresh token and
    retires the previous one; the list API then takes only the new access token."""

    def __init__(self, server: FixtureServer, on_rotate=None):
        self.server, self.on_rotate = server, on_rotate
        self.refresh_token, self.issued = FIRST_REFRESH, []
        self.bearer(TOKEN + "-expired-long-ago")  # what the API accepts now: not the token the source holds
        server.add(TOKEN_PATH, method="POST", handler=self.token)

    def bearer(self, access: str) -> None:
        self.access = access
        self.server.require(headers={"Authorization": f"Bearer {access}"}, except_paths=[TOKEN_PATH])

    def token(self, request):
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return 401, {"error": {"type": "invalid_client", "message": "invalid_client"}}
        form = parse_qs(request.get_data(as_text=True))
        if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [self.refresh_token]:
            return 400, {"error": {"type": "invalid_grant", "message": "invalid_grant",
                                   "description": "Invalid refresh token"}}
        n = len(self.issued) + 1
        self.refresh_token, access = f"refresh-ROTATED-{n}-a9c4e2f01b", f"access-NEW-{n}-3e7d9b15c0f2"
        self.issued.append((access, self.refresh_token))
        self.bearer(access)
        if self.on_rotate:
            self.on_rotate()
        return 200, {"access_token": access, "expires_in": 21600, "token_type": "Bearer", "scope": "98309",
                     "refresh_token": self.refresh_token}


def oauth_config(url: str, **overrides) -> dict:
    return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": FIRST_REFRESH,
            "access_token": TOKEN, "base_url": f"{url}/Api/v3", "oauth_url": f"{url}{TOKEN_PATH}", "limite": 2,
            **overrides}


@pytest.fixture
def bling(fast_retries):
    with FixtureServer() as server:
        serve_bling(server)
        yield server


def _stored(runtime, name: str) -> tuple[Source, dict]:
    connector, _ = build_connector(runtime, name)
    with runtime.session() as session:
        row = session.get(Source, name)
        session.expunge(row)
    return row, dict(connector.config)


def test_expired_token_is_renewed_rotated_pair_stored_encrypted_then_sync_goes_on(any_runtime, bling, caplog):
    caplog.set_level(logging.DEBUG)
    stored_at_retry = []
    endpoint = TokenEndpoint(bling, on_rotate=None)
    add_source(any_runtime, "erp_bling", "bling", oauth_config(bling.url))

    def check_persisted_first(request):
        # The first request with the new token: by now the new refresh token must already be in the database.
        if not stored_at_retry:
            stored_at_retry.append(_stored(any_runtime, "erp_bling")[1]["refresh_token"])
        return original(request)

    route = next(r for r in bling.routes if r.path == "/Api/v3/contatos")
    original, route.handler = route.handler, check_persisted_first

    result = sync_source(any_runtime, "erp_bling")

    assert result.status == "ok"
    assert result.counts["accepted"] == 5  # 3 contatos + 2 pedidos, read to the end after the renewal
    assert len(endpoint.issued) == 1  # one refresh, then the new access token served every call
    new_access, rotated = endpoint.issued[0]
    assert stored_at_retry == [rotated]
    unauthorized = [r for r in bling.requests if r.status == 401]
    assert len(unauthorized) == 1 and unauthorized[0].headers["Authorization"] == f"Bearer {TOKEN}"
    row, config = _stored(any_runtime, "erp_bling")
    assert config["refresh_token"] == rotated and config["access_token"] == new_access
    assert config["expires_at"] > datetime.now(timezone.utc) + timedelta(hours=5)
    # Secrets only as ciphertext; the expiry is plain configuration.
    assert set(row.config) >= {"client_id", "expires_at"} and not {"refresh_token", "access_token"} & set(row.config)
    for secret in (rotated, new_access, CLIENT_SECRET):
        assert secret.encode() not in row.secrets_ct
        assert secret not in caplog.text
    assert "rotated refresh token stored" in caplog.text
    assert row.cursor["contatos"] is not None and row.last_sync_status == "ok"

    # The next sync starts from the stored pair: no refresh needed, and the retired token is never sent.
    again = sync_source(any_runtime, "erp_bling")
    assert again.status == "ok" and len(endpoint.issued) == 1
    sent = [parse_qs(r.body.decode()).get("refresh_token") for r in bling.hits(TOKEN_PATH)]
    assert sent == [[FIRST_REFRESH]]


def test_past_expires_at_renews_before_the_first_call(runtime, bling):
    endpoint = TokenEndpoint(bling)
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    add_source(runtime, "erp_bling", "bling", oauth_config(bling.url, expires_at=past))

    sync_source(runtime, "erp_bling", stream="contatos")

    assert [r.path for r in bling.requests[:2]] == [TOKEN_PATH, "/Api/v3/contatos"]
    assert not [r for r in bling.requests if r.status == 401]  # renewed up front, never refused
    assert _stored(runtime, "erp_bling")[1]["refresh_token"] == endpoint.issued[0][1]


def test_refused_refresh_token_is_a_named_error_and_the_cursor_stays(any_runtime, bling, caplog):
    caplog.set_level(logging.DEBUG)
    endpoint = TokenEndpoint(bling)
    endpoint.refresh_token = "refresh-someone-else-used-it"  # ours was already rotated away
    add_source(any_runtime, "erp_bling", "bling", oauth_config(bling.url))
    with any_runtime.session() as session:
        session.get(Source, "erp_bling").cursor = {"contatos": {"since": "2026-01-01T00:00:00+00:00", "seen": []}}

    with pytest.raises(BlingReauthorize) as caught:
        sync_source(any_runtime, "erp_bling")

    message = str(caught.value)
    assert "invalid_grant" in message and "authorize the app in Bling again" in message
    assert "erp_bling --update" in message
    assert FIRST_REFRESH not in message and FIRST_REFRESH not in caplog.text
    row, config = _stored(any_runtime, "erp_bling")
    assert row.cursor == {"contatos": {"since": "2026-01-01T00:00:00+00:00", "seen": []}}
    assert row.last_sync_status == "failed"
    assert config["refresh_token"] == FIRST_REFRESH  # nothing was rotated, nothing overwritten
    assert not [r for r in bling.requests if r.status == 200]


def test_no_retry_when_the_new_pair_cannot_be_stored(bling):
    endpoint = TokenEndpoint(bling)
    connector = Bling(oauth_config(bling.url))

    def broken(changes):
        raise ConnectorError("bling: could not store the renewed tokens")

    connector.config_saver = broken
    with pytest.raises(ConnectorError, match="could not store"):
        list(connector.read("contatos"))
    assert len(endpoint.issued) == 1
    assert [r.path for r in bling.requests] == ["/Api/v3/contatos", TOKEN_PATH]  # no retry with unstored tokens


def test_standalone_connector_keeps_the_renewed_pair_in_memory(bling):
    endpoint = TokenEndpoint(bling)
    connector = Bling(oauth_config(bling.url))
    records = [r for batch in connector.read("contatos") for r in batch.records]
    assert len(records) == 3
    assert connector.config["refresh_token"] == endpoint.issued[0][1]
    assert endpoint.issued[0][0] in connector.secret_values()


@pytest.mark.parametrize("partial", [{"client_secret": None}, {"refresh_token": None}])
def test_oauth_needs_all_three_values(partial):
    from cdp.connectors import ConfigInvalid

    config = {k: v for k, v in oauth_config("http://127.0.0.1:9").items() if k not in partial}
    with pytest.raises(ConfigInvalid) as caught:
        Bling.validate_config(config)
    assert next(iter(partial)) in caught.value.errors
    assert CLIENT_SECRET not in str(caught.value)


def test_neither_access_token_nor_refresh_is_refused():
    from cdp.connectors import ConfigInvalid

    with pytest.raises(ConfigInvalid) as caught:
        Bling.validate_config({"base_url": "http://127.0.0.1:9/Api/v3"})
    assert "access_token" in caught.value.errors
