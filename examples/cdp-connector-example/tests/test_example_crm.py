"""Exemplo CRM: the cdp connector contract, plus what is particular to it."""
import json
from pathlib import Path

from cdp.connectors import Subject
from cdp.http import sign
from cdp.testing import ConnectorContract, FixtureServer

from cdp_connector_example.connector import ExampleCrm

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "exemplo-test-key-4f2a9c"
WEBHOOK_SECRET = "exemplo-webhook-secret-77c1"


def config(base_url, **overrides):
    return {"base_url": base_url, "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET, **overrides}


class TestExampleCrmContract(ConnectorContract):
    connector_class = ExampleCrm
    fixtures = FIXTURES
    list_path = "/v1/contacts"
    expected_records = 3

    def config(self, base_url):
        return config(base_url)

    def bad_credentials_config(self, base_url):
        return config(base_url, api_key="exemplo-wrong-key-000000")

    def webhook_delivery(self, base_url, signed=True):
        contact = json.loads((FIXTURES / "contacts_page1.json").read_text())["contacts"][0]
        body = json.dumps({"event": "contact.updated", "contact": contact}).encode()
        signature = sign(WEBHOOK_SECRET if signed else "some-other-secret-000", body)
        return body, {"X-Exemplo-Signature": f"sha256={signature}"}


def test_contact_maps_identifiers_traits_and_consent():
    record = ExampleCrm(config("https://api.exemplo.com.br")).map_contact(
        json.loads((FIXTURES / "contacts_page1.json").read_text())["contacts"][1])
    assert record["identifiers"] == {"email": "tiago.ramos@example.org", "phone": "+55 85 98765-1234"}
    assert record["traits"] == {"full_name": "Tiago Ramos", "city": "Fortaleza", "state": "CE"}
    assert record["consents"][0]["status"] == "revoked"


def test_erasure_request_deletes_the_contact_in_the_crm():
    with FixtureServer() as server:
        server.load(FIXTURES)
        result = ExampleCrm(config(server.url)).on_subject_request("delete", Subject(external_ids=["502"]))
        assert result.status == "done"
        assert [r.status for r in server.hits("/v1/contacts/502", "DELETE")] == [204]
