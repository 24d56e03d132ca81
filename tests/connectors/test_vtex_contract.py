"""The connector contract kit run on the first-party VTEX connector, against
recorded OMS pages (tests/fixtures/vtex) on the local fixture server."""
from cdp.testing import ConnectorContract
from plugins.vtex import VtexOrders

from tests.connectors.vtex_fake import FIXTURES, WEBHOOK_TOKEN, vtex_config


class TestVtexContract(ConnectorContract):
    connector_class = VtexOrders
    fixtures = FIXTURES
    list_path = "/api/oms/pvt/orders"
    expected_records = 5

    def config(self, base_url):
        return vtex_config(base_url)

    def bad_credentials_config(self, base_url):
        return vtex_config(base_url, app_token="WRONG-APP-TOKEN-000000000000")

    def webhook_delivery(self, base_url, signed=True):
        body = (FIXTURES / "hook_order_status.json").read_bytes()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["X-CDP-Webhook-Token"] = WEBHOOK_TOKEN
        return body, headers
