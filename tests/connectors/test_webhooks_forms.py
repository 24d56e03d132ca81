"""POST /api/v1/webhooks/{source} and POST /forms/{source}: the configured
source's connector verifies and maps each delivery; records go through
ingestion, so a repeated delivery is a duplicate. And GET /api/v1/sources
never returns a secret."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import func, select

from cdp.models import SourceRecord
from cdp.sources import add_source
from tests.connectors.vtex_fake import APP_KEY, APP_TOKEN, FIXTURES, WEBHOOK_TOKEN, recorded_orders, vtex_config

HOOK = (FIXTURES / "hook_order_status.json").read_bytes()
FORM = "application/x-www-form-urlencoded"
FORM_CONFIG = {"fields": {"email": "email", "celular": "phone", "nome": "full_name", "nascimento": "birth_date",
                          "aceito_news": "consent:email_marketing"},
               "notice_version": "aviso-2026-01"}


@pytest.fixture
def any_client(any_runtime):
    from cdp import create_app

    return create_app(any_runtime.settings, any_runtime.keyring).test_client()


def record_count(runtime, source: str) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.source == source))


def hook(client, source="loja_vtex", body=HOOK, token=WEBHOOK_TOKEN):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-CDP-Webhook-Token"] = token
    return client.post(f"/api/v1/webhooks/{source}", data=body, headers=headers)


# -- webhooks -----------------------------------------------------------------------------------------


def test_webhook_stores_the_order_once_and_duplicates_after(any_runtime, any_client, vtex):
    add_source(any_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    first = hook(any_client)
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.get_json() == {"counts": {"accepted": 1, "updated": 0, "duplicate": 0, "rejected": 0}}
    again = hook(any_client)  # VTEX delivers again (retry, or another status change with the same data)
    assert again.get_json() == {"counts": {"accepted": 0, "updated": 0, "duplicate": 1, "rejected": 0}}
    assert record_count(any_runtime, "loja_vtex") == 1
    # A later sync reads the same order: still one record.
    from cdp.sources import sync_source

    assert sync_source(any_runtime, "loja_vtex").counts["duplicate"] == 1
    assert record_count(any_runtime, "loja_vtex") == len(recorded_orders())


def test_webhook_with_a_bad_token_is_401_problem(client, runtime, vtex, problem):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    for token in (None, "hook-token-000000000000"):
        body = problem(hook(client, token=token), 401)
        assert "X-CDP-Webhook-Token" in body["detail"]
    assert record_count(runtime, "loja_vtex") == 0


def test_webhook_ping_unknown_unconfigured_and_unreadable(client, runtime, vtex, problem):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    ping = hook(client, body=b'{"hookConfig": "ping"}')
    assert ping.status_code == 200 and ping.get_json()["counts"]["accepted"] == 0
    problem(hook(client, source="nada"), 404)
    problem(hook(client, source="Not A Source"), 404)
    from cdp.ingest import ingest_batch

    ingest_batch(runtime, "crm", [{"external_id": "1", "identifiers": {"email": "a@example.com"}}])
    problem(hook(client, source="crm"), 404)  # an API source takes no webhooks
    assert "JSON" in problem(hook(client, body=b"{not json"), 400)["detail"]


def test_webhook_when_the_source_api_fails_asks_for_a_retry(client, runtime, vtex, problem):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    vtex.server.fail("*", 503, times=10)
    body = problem(hook(client), 503)
    assert "vtex" in body["detail"] and APP_TOKEN not in body["detail"]
    assert record_count(runtime, "loja_vtex") == 0


def test_webhook_over_a_real_http_server(app, runtime, vtex):
    from werkzeug.serving import make_server
    import threading

    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/api/v1/webhooks/loja_vtex"
        ok = requests.post(url, data=HOOK, headers={"Content-Type": "application/json",
                                                    "X-CDP-Webhook-Token": WEBHOOK_TOKEN}, timeout=60)
        bad = requests.post(url, data=HOOK, headers={"Content-Type": "application/json"}, timeout=60)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=30)
    assert ok.status_code == 200 and ok.json()["counts"]["accepted"] == 1
    assert bad.status_code == 401 and bad.headers["Content-Type"] == "application/problem+json"


# -- forms ------------------------------------------------------------------------------------------


def post_form(client, data, source="contato", headers=None):
    return client.post(f"/forms/{source}", data=urlencode(data), headers={"Content-Type": FORM, **(headers or {})})


def test_form_is_stored_with_consent_and_thanked_in_pt_br(any_runtime, any_client):
    add_source(any_runtime, "contato", "html_form", FORM_CONFIG)
    data = {"email": "Marina.Castro@Example.com.br", "celular": "(11) 91234-5678", "nome": "Marina Castro",
            "aceito_news": "on", "website": ""}
    response = post_form(any_client, data)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Obrigado! Recebemos suas informações." in page and 'lang="pt-BR"' in page
    assert "Marina" not in page  # nothing personal echoed back
    again = post_form(any_client, data)  # a double click
    assert again.status_code == 200
    assert record_count(any_runtime, "contato") == 1
    with any_runtime.session() as session:
        record = session.scalars(select(SourceRecord).where(SourceRecord.source == "contato")).one()
        from cdp import crypto

        payload = crypto.decrypt_json(any_runtime.keys(session).get(record.key_id), record.payload_ct,
                                       "source_records", record.id, "payload")
    assert payload["consents"][0]["purpose"] == "email_marketing"
    assert payload["consents"][0]["evidence"] == {"channel": "web_form", "form": "contato",
                                                  "notice_version": "aviso-2026-01"}
    assert {i["kind"] for i in payload["identifiers"]} == {"email", "phone"}


def test_form_redirects_when_configured(client, runtime):
    add_source(runtime, "contato", "html_form", {**FORM_CONFIG, "redirect_url": "https://loja.example.com.br/obrigado"})
    response = post_form(client, {"email": "ana@example.com.br"})
    assert response.status_code == 303 and response.headers["Location"] == "https://loja.example.com.br/obrigado"


def test_honeypot_is_thanked_but_nothing_is_stored(client, runtime):
    add_source(runtime, "contato", "html_form", FORM_CONFIG)
    response = post_form(client, {"email": "bot@spam.example", "website": "http://spam.example"})
    assert response.status_code == 200 and "Obrigado" in response.get_data(as_text=True)
    assert record_count(runtime, "contato") == 0


def test_form_errors_are_html_pages_naming_what_to_fix(client, runtime):
    add_source(runtime, "contato", "html_form", {**FORM_CONFIG, "allowed_origins": ["https://loja.example.com.br"]})
    ok_origin = {"Origin": "https://loja.example.com.br"}
    no_contact = post_form(client, {"nome": "Sem Contato"}, headers=ok_origin)
    assert no_contact.status_code == 422 and "e-mail ou telefone" in no_contact.get_data(as_text=True)
    bad_date = post_form(client, {"email": "ana@example.com.br", "nascimento": "ontem"}, headers=ok_origin)
    assert bad_date.status_code == 422 and "traits.birth_date" in bad_date.get_data(as_text=True)
    foreign = post_form(client, {"email": "ana@example.com.br"}, headers={"Origin": "https://outro.example"})
    assert foreign.status_code == 403 and foreign.mimetype == "text/html"
    as_json = client.post("/forms/contato", json={"email": "ana@example.com.br"}, headers=ok_origin)
    assert as_json.status_code == 415
    assert post_form(client, {"email": "a@b.com"}, source="nada").status_code == 404
    assert record_count(runtime, "contato") == 0


def test_forms_only_for_form_sources(client, runtime, vtex):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    response = post_form(client, {"email": "a@b.com"}, source="loja_vtex")
    assert response.status_code == 404 and "Formulário não encontrado" in response.get_data(as_text=True)


# -- the sources API --------------------------------------------------------------------------------


def test_sources_api_never_returns_secrets(client, runtime, api_key, vtex, problem):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    admin = {"Authorization": f"Bearer {api_key('admin')}"}
    listed = client.get("/api/v1/sources", headers=admin)
    assert listed.status_code == 200
    (source,) = listed.get_json()["sources"]
    assert source["type"] == "vtex" and source["secrets"] == ["app_key", "app_token", "webhook_token"]
    one = client.get("/api/v1/sources/loja_vtex", headers=admin)
    assert one.get_json()["config"]["account"] == "lojaexemplo"
    for text in (listed.get_data(as_text=True), one.get_data(as_text=True)):
        for secret in (APP_KEY, APP_TOKEN, WEBHOOK_TOKEN):
            assert secret not in text
    problem(client.get("/api/v1/sources", headers={"Authorization": f"Bearer {api_key('ingest')}"}), 403)
    problem(client.get("/api/v1/sources/nada", headers=admin), 404)


def test_openapi_documents_webhooks_and_forms(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "post" in paths["/api/v1/webhooks/{source}"] and "post" in paths["/forms/{source}"]
    assert paths["/api/v1/webhooks/{source}"]["post"]["security"] == []


def test_form_mapping_is_stable_within_a_day_and_unticked_boxes_record_nothing():
    from datetime import datetime, timezone

    from cdp.connectors import ConfigInvalid
    from plugins.html_form import HtmlForm

    form = HtmlForm(FORM_CONFIG, source="contato")
    data = {"email": ["ana@example.com.br"], "aceito_news": [""], "nome": ["Ana"]}
    morning = form.map_form(data, datetime(2026, 3, 2, 9, 15, 42, tzinfo=timezone.utc))
    evening = form.map_form(data, datetime(2026, 3, 2, 19, 0, tzinfo=timezone.utc))
    next_day = form.map_form(data, datetime(2026, 3, 3, 9, 15, tzinfo=timezone.utc))
    assert morning["external_id"] == evening["external_id"] != next_day["external_id"]
    assert morning["events"][0]["occurred_at"] == "2026-03-02T09:15:00+00:00"  # to the minute
    assert "consents" not in morning  # an unticked box is not a revocation
    ticked = form.map_form({**data, "aceito_news": ["sim"]}, datetime(2026, 3, 2, 9, 15, tzinfo=timezone.utc))
    assert ticked["consents"][0]["status"] == "granted" and ticked["external_id"] != morning["external_id"]
    with pytest.raises(ConfigInvalid) as info:
        HtmlForm({"honeypot": "site"})
    assert list(info.value.errors) == ["fields"]
    with pytest.raises(ConfigInvalid, match="identifier field"):
        HtmlForm({"fields": {"nome": "full_name"}})
