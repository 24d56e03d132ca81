"""The VTEX orders connector against a VTEX stand-in on a real local HTTP
server: mapping, pagination, the incremental cursor, VTEX's 30-page limit,
retries, bad credentials, malformed pages and webhooks."""
from __future__ import annotations

import json
import logging

import pytest

from cdp.connectors import AuthError, ConfigInvalid, MalformedResponse, SourceUnavailable, WebhookError
from cdp.testing import read_all
from plugins.vtex import VtexOrders
from tests.connectors.vtex_fake import APP_KEY, APP_TOKEN, FIXTURES, LIST, WEBHOOK_TOKEN, recorded_orders, vtex_config

ANA, CARLOS, HORIZONTE, ANA_AGAIN, JOAQUIM = (o["orderId"] for o in recorded_orders())


def records_of(connector, cursor=None, batch_size=100):
    batches = list(connector.read("orders", cursor, batch_size))
    return batches, [r for b in batches for r in b.records]


def test_order_maps_to_a_purchase_in_reais_with_identifiers_and_address(vtex):
    _, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    ana = next(r for r in records if r["external_id"] == ANA)
    assert ana["identifiers"] == {
        "email": ["ana.souza@example.com.br"], "phone": ["+5511987654321"], "cpf": ["52998224725"],
        "custom": {"vtex_profile": {"value": "3f2a9c0e-5b1d-4e8a-9f7c-2d6b1a0e9c41", "match": "exact"}}}
    assert ana["traits"] == {"first_name": "Ana Beatriz", "last_name": "Souza", "street": "Rua Augusta",
                             "street_number": "1500", "complement": "ap 42", "neighborhood": "Consolação",
                             "postal_code": "01304-001", "city": "São Paulo", "state": "SP", "country": "BR"}
    (event,) = ana["events"]
    assert event["type"] == "purchase" and event["id"] == ANA
    assert event["amount"] == "349.90" and event["currency"] == "BRL"  # value 34990 cents
    assert event["occurred_at"] == "2026-03-02T12:14:33.1234567+00:00"
    assert event["attributes"]["status"] == "invoiced"
    assert event["attributes"]["items"] == [
        {"id": "2000531", "name": "Camiseta Algodão Orgânico Azul M", "quantity": 2, "price": "79.90"},
        {"id": "2000877", "name": "Tênis Corrida Leve 38", "quantity": 1, "price": "190.10"}]
    assert "email_masked" not in event["attributes"]


def test_masked_vtex_email_is_kept_and_flagged(vtex):
    _, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    carlos = next(r for r in records if r["external_id"] == CARLOS)
    assert carlos["identifiers"]["email"] == ["b4f2c0e7d1a94e6f8c3b5a7d9e1f2a3b@ct.vtex.com.br"]
    assert carlos["events"][0]["attributes"]["email_masked"] is True
    assert carlos["events"][0]["attributes"]["marketplace"] == "Mercado Livre"
    assert carlos["events"][0]["amount"] == "144.90"  # item plus shipping


def test_corporate_order_carries_the_cnpj_and_the_buyer_cpf(vtex):
    _, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    horizonte = next(r for r in records if r["external_id"] == HORIZONTE)
    assert horizonte["identifiers"]["cnpj"] == ["11222333000181"]
    assert horizonte["identifiers"]["cpf"] == ["39053344705"]
    assert horizonte["events"][0]["amount"] == "4590.00"


def test_pages_through_the_list_with_the_date_filter_and_order(vtex):
    batches, records = records_of(VtexOrders(vtex_config(vtex.server.url, per_page=2)))
    assert [r["external_id"] for r in records] == [ANA, CARLOS, HORIZONTE, ANA_AGAIN, JOAQUIM]
    assert len(batches) == 3
    requests = vtex.list_requests()
    assert [r.query["page"] for r in requests] == ["1", "2", "3"]
    assert {r.query["per_page"] for r in requests} == {"2"}
    assert {r.query["orderBy"] for r in requests} == {"creationDate,asc"}
    low, high = requests[0].query["f_creationDate"][len("creationDate:["):-1].split(" TO ")
    assert low == "2026-01-01T00:00:00.000Z" and high.endswith("Z")
    # Credentials travel in VTEX's headers.
    assert requests[0].headers["X-Vtex-Api-Appkey"] == APP_KEY
    assert requests[0].headers["X-Vtex-Api-Apptoken"] == APP_TOKEN


def test_each_batch_cursor_resumes_after_it(vtex):
    batches, records = records_of(VtexOrders(vtex_config(vtex.server.url, per_page=2)))
    for i, batch in enumerate(batches):
        _, rest = records_of(VtexOrders(vtex_config(vtex.server.url, per_page=2)), json.loads(json.dumps(batch.cursor)))
        assert [r["external_id"] for r in rest] == [r["external_id"] for b in batches[i + 1:] for r in b.records]


def test_cursor_makes_the_next_read_incremental(vtex):
    batches, _ = records_of(VtexOrders(vtex_config(vtex.server.url)))
    cursor = batches[-1].cursor
    # Two orders share the last creation date: both are remembered, the filter is inclusive.
    assert cursor == {"since": "2026-03-04T18:22:10+00:00", "seen": [ANA_AGAIN, JOAQUIM]}
    _, again = records_of(VtexOrders(vtex_config(vtex.server.url)), cursor)
    assert again == []
    vtex.new_order("1412360518020-01", "2026-03-04T18:22:10.0000000+00:00")  # same second, new id
    vtex.new_order("1412360518021-01", "2026-03-05T08:00:00.0000000+00:00")
    batches, new = records_of(VtexOrders(vtex_config(vtex.server.url)), cursor)
    assert [r["external_id"] for r in new] == ["1412360518020-01", "1412360518021-01"]
    assert vtex.list_requests()[-1].query["f_creationDate"].startswith("creationDate:[2026-03-04T18:22:10.000Z TO ")
    assert batches[-1].cursor == {"since": "2026-03-05T08:00:00+00:00", "seen": ["1412360518021-01"]}


def test_more_than_thirty_pages_are_read_by_querying_again(vtex):
    for n in range(31):
        vtex.new_order(f"14123606{n:05d}-01", f"2026-04-01T10:{n // 60:02d}:{n % 60:02d}.0000000+00:00")
    batches, records = records_of(VtexOrders(vtex_config(vtex.server.url, per_page=1)))
    ids = [r["external_id"] for r in records]
    assert len(ids) == len(set(ids)) == 36  # 5 recorded + 31 new, each once
    assert max(int(r.query["page"]) for r in vtex.list_requests()) == 30
    starts = {r.query["f_creationDate"].split(" TO ")[0] for r in vtex.list_requests()}
    assert len(starts) == 2  # the second query starts from the last date read


def test_authorized_date_and_status_filters(vtex):
    records_of(VtexOrders(vtex_config(vtex.server.url, date_field="authorizedDate", statuses=["invoiced"])))
    query = vtex.list_requests()[0].query
    assert query["f_authorizedDate"].startswith("authorizedDate:[2026-01-01T00:00:00.000Z TO ")
    assert query["orderBy"] == "authorizedDate,asc" and query["f_status"] == "invoiced"


def test_orders_younger_than_settle_minutes_wait_for_the_next_read(vtex):
    from datetime import datetime, timedelta, timezone

    fresh = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    vtex.new_order("1412360518099-01", fresh)
    batches, records = records_of(VtexOrders(vtex_config(vtex.server.url, settle_minutes=5)))
    assert "1412360518099-01" not in [r["external_id"] for r in records]
    _, later = records_of(VtexOrders(vtex_config(vtex.server.url, settle_minutes=0)), batches[-1].cursor)
    assert [r["external_id"] for r in later] == ["1412360518099-01"]


def test_429_with_retry_after_then_success(vtex):
    vtex.server.fail(LIST, 429, retry_after=1)
    _, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    assert len(records) == 5
    assert [r.status for r in vtex.list_requests()][:2] == [429, 200]


def test_5xx_is_retried_then_unavailable_without_secrets(vtex, caplog):
    caplog.set_level(logging.DEBUG)
    vtex.server.fail(f"{LIST}/{ANA}", 502, times=2)
    _, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    assert len(records) == 5
    vtex.server.fail(LIST, 500, times=10)
    with pytest.raises(SourceUnavailable) as info:
        records_of(VtexOrders(vtex_config(vtex.server.url)))
    assert str(info.value).startswith("vtex: 127.0.0.1 answered HTTP 500")
    assert len([r for r in vtex.list_requests() if r.status == 500]) == 3  # 1 + 2 retries
    for text in (str(info.value), caplog.text):
        assert APP_TOKEN not in text and APP_KEY not in text


def test_bad_credentials_name_the_connector_and_what_to_check(vtex):
    connector = VtexOrders(vtex_config(vtex.server.url, app_token="WRONG-TOKEN-123456789"))
    with pytest.raises(AuthError) as info:
        connector.check()
    assert str(info.value).startswith("vtex: credentials rejected (HTTP 401): check app_key/app_token")
    assert "WRONG-TOKEN-123456789" not in str(info.value)
    VtexOrders(vtex_config(vtex.server.url)).check()


def test_malformed_list_page_and_order_detail(vtex):
    vtex.server.malformed(LIST)
    with pytest.raises(MalformedResponse, match=r"^vtex: GET /api/oms/pvt/orders answered HTTP 200 with a body"):
        records_of(VtexOrders(vtex_config(vtex.server.url)))
    vtex.server.routes[:] = [r for r in vtex.server.routes if not r.path.endswith(ANA)]
    vtex.server.add(f"{LIST}/{ANA}", json={"unexpected": True})
    with pytest.raises(MalformedResponse, match="malformed order detail"):
        records_of(VtexOrders(vtex_config(vtex.server.url)))


def test_list_without_the_list_key_is_malformed(vtex):
    vtex.server.routes[:] = [r for r in vtex.server.routes if r.path != LIST]
    vtex.server.add(LIST, json={"items": []})
    with pytest.raises(MalformedResponse, match="expected a list at 'list'"):
        records_of(VtexOrders(vtex_config(vtex.server.url)))


def test_deleted_order_is_reported_and_skipped(vtex):
    vtex.server.routes[:] = [r for r in vtex.server.routes if not r.path.endswith(CARLOS)]
    batches, records = records_of(VtexOrders(vtex_config(vtex.server.url)))
    assert CARLOS not in [r["external_id"] for r in records] and len(records) == 4
    assert batches[0].errors == [(f"order {CARLOS}", {"orderId": ["not found (deleted?)"]})]


def test_config_is_validated_by_the_schema_naming_the_field():
    with pytest.raises(ConfigInvalid) as info:
        VtexOrders({"account": "Loja Exemplo!", "app_key": "k", "app_token": "t"})
    assert list(info.value.errors) == ["account"]
    with pytest.raises(ConfigInvalid, match="app_token"):
        VtexOrders({"account": "lojaexemplo", "app_key": "k"})
    with pytest.raises(ConfigInvalid, match="date_field"):
        VtexOrders({"account": "lojaexemplo", "app_key": "k", "app_token": "t", "date_field": "lastChange"})
    connector = VtexOrders({"account": "lojaexemplo", "app_key": "k", "app_token": "t"})
    assert connector.base_url == "https://lojaexemplo.vtexcommercestable.com.br"


def test_webhook_fetches_the_order_and_refuses_a_wrong_token(vtex):
    connector = VtexOrders(vtex_config(vtex.server.url))
    body = (FIXTURES / "hook_order_status.json").read_bytes()
    (record,) = connector.handle_webhook(body, {"X-CDP-Webhook-Token": WEBHOOK_TOKEN})
    assert record["external_id"] == ANA and record["events"][0]["type"] == "purchase"
    assert connector.handle_webhook(b'{"hookConfig": "ping"}', {"x-cdp-webhook-token": WEBHOOK_TOKEN}) == []
    for headers, status in (({}, 401), ({"X-CDP-Webhook-Token": "hook-token-000000000000"}, 401)):
        with pytest.raises(WebhookError) as info:
            connector.handle_webhook(body, headers)
        assert info.value.status == status
    with pytest.raises(WebhookError) as info:
        connector.handle_webhook(b"not json", {"X-CDP-Webhook-Token": WEBHOOK_TOKEN})
    assert info.value.status == 400
    other = json.loads(body) | {"Origin": {"Account": "outraloja", "Key": "x"}}
    with pytest.raises(WebhookError, match="another VTEX account"):
        connector.handle_webhook(json.dumps(other).encode(), {"X-CDP-Webhook-Token": WEBHOOK_TOKEN})
    no_token = VtexOrders({k: v for k, v in vtex_config(vtex.server.url).items() if k != "webhook_token"})
    with pytest.raises(WebhookError) as info:
        no_token.handle_webhook(body, {"X-CDP-Webhook-Token": WEBHOOK_TOKEN})
    assert info.value.status == 404


def test_subject_requests_are_manual_with_pt_br_and_english_instructions(vtex):
    from cdp.connectors import Subject

    result = VtexOrders(vtex_config(vtex.server.url)).on_subject_request("delete", Subject(external_ids=[ANA]))
    assert result.status == "manual"
    assert "anonimização" in result.detail and "anonymization" in result.detail


def test_read_all_helper_reads_every_stream(vtex):
    batches, cursors = read_all(VtexOrders(vtex_config(vtex.server.url)))
    assert list(batches) == ["orders"] and cursors["orders"]["seen"] == [ANA_AGAIN, JOAQUIM]
