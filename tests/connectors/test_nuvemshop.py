"""Nuvemshop orders/customers on recorded pages (tests/fixtures/nuvemshop) on the
local fixture server: the contract kit, then mapping, pagination (404 past the
last page), the incremental cursor, headers and webhooks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdp.connectors import ConnectorError, WebhookError
from cdp.http import sign
from cdp.testing import ConnectorContract, FixtureServer, read_all
from plugins.nuvemshop import Nuvemshop

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nuvemshop"
TOKEN = json.loads((FIXTURES / "routes.json").read_text())["auth"]["headers"]["Authentication"].split(" ", 1)[1]
APP_SECRET = "nuvem-app-secret-9d2f7a61"
ORDERS = "/v1/123456/orders"


def config(base_url: str, **overrides) -> dict:
    return {"store_id": "123456", "access_token": TOKEN, "user_agent": "Loja CDP (ti@loja.example.com.br)",
            "base_url": f"{base_url}/v1", "per_page": 2, "app_secret": APP_SECRET, **overrides}


def hook(signed: bool = True) -> tuple[bytes, dict]:
    body = (FIXTURES / "hook_order_paid.json").read_bytes()
    return body, {"x-linkedstore-hmac-sha256": sign(APP_SECRET if signed else "wrong-secret-000", body)}


class TestNuvemshopContract(ConnectorContract):
    connector_class = Nuvemshop
    fixtures = FIXTURES
    list_path = ORDERS
    expected_records = 5  # 3 orders + 2 customers

    def config(self, base_url):
        return config(base_url)

    def bad_credentials_config(self, base_url):
        return config(base_url, access_token="wrong-token-00000000")

    def webhook_delivery(self, base_url, signed=True):
        return hook(signed)


@pytest.fixture
def shop(fast_retries):
    with FixtureServer() as server:
        server.load(FIXTURES)
        yield server


def test_orders_map_to_purchase_events_with_identifiers_and_address(shop):
    batches, _ = read_all(Nuvemshop(config(shop.url)))
    orders = [r for b in batches["orders"] for r in b.records]
    first = orders[0]
    assert first["external_id"] == "order:871230001"
    assert first["identifiers"] == {"email": "heloisa.costa@terra.com.br", "phone": "+55 11 97511-6372",
                                    "cpf": "53002269476", "custom": {"nuvemshop_customer": "90210011"}}
    assert first["traits"]["full_name"] == "Heloísa Costa" and first["traits"]["neighborhood"] == "Consolação"
    event = first["events"][0]
    assert (event["type"], event["amount"], event["currency"]) == ("purchase", "264.80", "BRL")
    assert [i["sku"] for i in event["attributes"]["items"]] == ["CAM-ORG-M", "CAN-CER"]
    assert event["occurred_at"] == "2026-03-02T12:14:33+00:00"
    assert orders[2]["identifiers"]["cnpj"] == "44194161000139"  # a company buying: identification is a CNPJ


def test_customers_carry_the_marketing_opt_in(shop):
    batches, _ = read_all(Nuvemshop(config(shop.url)))
    customers = [r for b in batches["customers"] for r in b.records]
    assert [c["consents"][0]["status"] for c in customers] == ["granted", "revoked"]
    assert customers[1]["traits"]["city"] == "Manaus"


def test_pages_headers_and_the_page_past_the_last(shop):
    batches, cursors = read_all(Nuvemshop(config(shop.url)))
    assert [len(b.records) for b in batches["orders"]] == [2, 1]
    # customers: a full page 1, then page 2 answers 404 "Last page is 1": the end, not an error
    assert [len(b.records) for b in batches["customers"]] == [2, 0]
    hit = shop.hits(ORDERS)[0]
    assert hit.headers["Authentication"] == f"bearer {TOKEN}"
    assert hit.headers["User-Agent"] == "Loja CDP (ti@loja.example.com.br)"
    assert hit.query["per_page"] == "2"
    assert cursors["orders"] == {"since": "2026-03-05T10:00:00+00:00", "seen": ["871230003"]}


def test_incremental_read_sends_updated_at_min_and_resumes_mid_pass(shop):
    connector = Nuvemshop(config(shop.url))
    _, cursors = read_all(connector)
    list(connector.read("orders", cursors["orders"]))
    assert shop.hits(ORDERS)[-1].query["updated_at_min"] == "2026-03-05T10:00:00+00:00"
    first = next(connector.read("orders"))
    assert first.cursor["page"] == 2
    resumed = [r["external_id"] for b in connector.read("orders", first.cursor) for r in b.records]
    assert resumed == ["order:871230003"]
    assert shop.hits(ORDERS)[-1].query["page"] == "2"


def test_unknown_store_is_a_clear_error(shop):
    with pytest.raises(ConnectorError, match="nuvemshop: store not found"):
        Nuvemshop(config(shop.url, store_id="999")).check()


def test_webhook_fetches_the_order_and_repeated_delivery_maps_identically(shop):
    connector = Nuvemshop(config(shop.url))
    first = connector.handle_webhook(*hook())
    again = connector.handle_webhook(*hook())
    assert first == again and first[0]["external_id"] == "order:871230001"
    ping = json.dumps({"store_id": 123456, "event": "product/created", "id": 5}).encode()
    assert connector.handle_webhook(ping, {"x-linkedstore-hmac-sha256": sign(APP_SECRET, ping)}) == []
    other = json.dumps({"store_id": 777, "event": "order/paid", "id": 871230001}).encode()
    with pytest.raises(WebhookError) as info:
        connector.handle_webhook(other, {"x-linkedstore-hmac-sha256": sign(APP_SECRET, other)})
    assert info.value.status == 400


def test_repeated_webhook_delivery_is_a_duplicate_in_the_store(shop, tmp_path):
    from cdp.ingest import ingest_batch
    from cdp.testing.contract import make_test_runtime

    runtime = make_test_runtime(tmp_path / "instance")
    connector = Nuvemshop(config(shop.url))
    counts = [ingest_batch(runtime, "nuvemshop", connector.handle_webhook(*hook()), plugin="nuvemshop").counts()
              for _ in range(2)]
    assert counts[0]["accepted"] == 1 and counts[1]["duplicate"] == 1 and counts[1]["accepted"] == 0
