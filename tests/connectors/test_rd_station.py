"""RD Station Marketing conversion webhooks on recorded deliveries
(tests/fixtures/rd_station): the webhook contract, the mapping of leads,
conversions and LGPD legal bases, and the token checks."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from cdp.connectors import ConfigInvalid, WebhookError
from plugins.rd_station import RdStation
from tests.connectors.webhook_contract import WebhookContract

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rd_station"
TOKEN = "rd-hook-token-8f3a1c6e2b9d4a70"
FILES = ("conversion_ebook.json", "conversion_two_leads.json")


def delivery(name: str, token: str | None = TOKEN, basic: bool = False) -> tuple[bytes, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None and basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"rd:{token}".encode()).decode()
    elif token is not None:
        headers["X-CDP-Webhook-Token"] = token
    return (FIXTURES / name).read_bytes(), headers


class TestRdStationContract(WebhookContract):
    connector_class = RdStation
    signs_body = False  # a shared token, not a signature

    def config(self, base_url):
        return {"webhook_token": TOKEN, "notice_version": "aviso-2026-01"}

    def deliveries(self, signed=True):
        return [delivery(name, TOKEN if signed else "wrong-token-0000000000000000") for name in FILES]


@pytest.fixture
def rd():
    return RdStation({"webhook_token": TOKEN, "notice_version": "aviso-2026-01"})


def test_lead_maps_to_identifiers_form_submission_and_consent(rd):
    [record] = rd.handle_webhook(*delivery(FILES[0]))
    assert record["external_id"] == "lead:7d2f8c4e-9b1a-4c3d-8e5f-0a1b2c3d4e5f:2026-03-02T13:15:42.108000+00:00"
    assert record["identifiers"] == {"email": "ana.rios@uol.com.br", "phone": ["(77) 94650-7529", "(77) 3421-5510"],
                                     "custom": {"rd_station_lead": "7d2f8c4e-9b1a-4c3d-8e5f-0a1b2c3d4e5f"}}
    assert record["traits"] == {"full_name": "Ana Cecília Rios", "city": "Vitória da Conquista", "state": "BA"}
    event = record["events"][0]
    assert event["type"] == "form_submission"
    assert event["attributes"]["conversion_identifier"] == "ebook-guia-moveis-planejados"
    assert event["attributes"]["first_conversion"] == "newsletter-rodape"
    assert "cargo" not in str(event)  # free form fields are not kept
    assert record["consents"] == [{"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
                                   "occurred_at": "2026-03-02T13:15:42.108000+00:00",
                                   "evidence": {"channel": "rd_station",
                                                "conversion_identifier": "ebook-guia-moveis-planejados",
                                                "rd_station_type": "consent", "rd_station_category": "communications",
                                                "notice_version": "aviso-2026-01"}}]


def test_legal_bases_map_to_art7_and_declines(rd):
    davi, company = rd.handle_webhook(*delivery(FILES[1]))
    assert [(c["legal_basis"], c["status"]) for c in davi["consents"]] == [("consent", "revoked")]
    assert [(c["legal_basis"], c["status"]) for c in company["consents"]] == [("contract", "granted"),
                                                                            ("legitimate_interest", "opted_out")]
    assert "phone" not in company["identifiers"] and "traits" in company


def test_other_categories_follow_the_purposes_map():
    connector = RdStation({"webhook_token": TOKEN, "purposes": {"communications": "newsletter"}})
    [record] = connector.handle_webhook(*delivery(FILES[0]))
    assert record["consents"][0]["purpose"] == "newsletter"
    with pytest.raises(ConfigInvalid) as info:
        RdStation({"webhook_token": TOKEN, "purposes": {"communications": "Not Snake"}})
    assert "purposes" in str(info.value)


def test_token_in_the_url_password_is_accepted_and_a_wrong_one_refused(rd):
    assert rd.handle_webhook(*delivery(FILES[0], basic=True))
    with pytest.raises(WebhookError) as info:
        rd.handle_webhook(*delivery(FILES[0], token="rd-hook-token-WRONG-000000", basic=True))
    assert info.value.status == 401


def test_unreadable_body_is_400(rd):
    for body in (b"{not json", b'{"leads": "x"}', b'{"leads": [{"email": "a@b.com.br"}]}'):
        with pytest.raises(WebhookError) as info:
            rd.handle_webhook(body, {"X-CDP-Webhook-Token": TOKEN})
        assert info.value.status == 400
