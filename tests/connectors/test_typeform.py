"""Typeform form_response webhooks on recorded deliveries (tests/fixtures/typeform):
the webhook contract, the signature, and the mapping of identifiers, hidden
fields and NPS/CSAT/CES scores."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest

from cdp.connectors import WebhookError
from plugins.typeform import Typeform
from tests.connectors.webhook_contract import WebhookContract

FIXTURES = Path(__file__).parent.parent / "fixtures" / "typeform"
SECRET = "tf-webhook-secret-2c7e9a4b1d"
FILES = ("response_nps.json", "response_csat_ces.json")
CONFIG = {"webhook_secret": SECRET, "fields": {"nome": "full_name"}, "hidden": {"cpf": "cpf"},
          "scores": {"satisfacao": "csat", "esforco": "ces"}}


def signed(body: bytes, secret: str = SECRET) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"Typeform-Signature": "sha256=" + base64.b64encode(digest).decode(), "Content-Type": "application/json"}


def delivery(name: str, secret: str = SECRET) -> tuple[bytes, dict]:
    body = (FIXTURES / name).read_bytes()
    return body, signed(body, secret)


class TestTypeformContract(WebhookContract):
    connector_class = Typeform

    def config(self, base_url):
        return CONFIG

    def deliveries(self, signed=True):
        return [delivery(name, SECRET if signed else "not-the-secret-00000") for name in FILES]


@pytest.fixture
def typeform():
    return Typeform(CONFIG)


def test_nps_response_maps_identifiers_hidden_fields_and_score(typeform):
    [record] = typeform.handle_webhook(*delivery(FILES[0]))
    assert record["external_id"] == "response:a3f9k2m8q1w7e5r0t6y4u2i8o3p9l1zx"
    assert record["identifiers"] == {"email": "ana.rios@uol.com.br", "phone": "+5577946507529",
                                     "cpf": "057.833.470-43"}
    assert record["traits"] == {"full_name": "Ana Cecília Rios"}
    submission, survey = record["events"]
    assert submission["type"] == "form_submission" and submission["occurred_at"] == "2026-03-05T12:03:44+00:00"
    assert survey["type"] == "survey_response" and survey["attributes"]["nps"] == 9
    assert survey["attributes"]["question"].startswith("De 0 a 10")
    assert "A entrega atrasou" not in json.dumps(record, ensure_ascii=False)  # unmapped free text is not kept


def test_opinion_scales_become_csat_and_ces_when_configured(typeform):
    [record] = typeform.handle_webhook(*delivery(FILES[1]))
    scores = {e["attributes"]["field_ref"]: e["attributes"] for e in record["events"] if e["type"] == "survey_response"}
    assert scores["satisfacao"]["csat"] == 4 and scores["esforco"]["ces"] == 2
    bare = Typeform({"webhook_secret": SECRET})  # without `scores`, an opinion scale is not a known metric
    assert [e["type"] for e in bare.handle_webhook(*delivery(FILES[1]))[0]["events"]] == ["form_submission"]


def test_out_of_range_score_is_left_out_and_logged_without_the_value(typeform, caplog):
    payload = json.loads((FIXTURES / FILES[1]).read_text(encoding="utf-8"))
    payload["form_response"]["answers"][1]["number"] = 7  # csat is 1-5
    body = json.dumps(payload).encode()
    caplog.set_level(logging.WARNING)
    [record] = typeform.handle_webhook(body, signed(body))
    assert "csat" not in json.dumps(record["events"])
    assert "csat answer outside 1-5" in caplog.text and "heloisa" not in caplog.text


def test_signature_is_base64_hmac_of_the_raw_body(typeform):
    body = (FIXTURES / FILES[0]).read_bytes()
    hex_signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with pytest.raises(WebhookError) as info:
        typeform.handle_webhook(body, {"Typeform-Signature": hex_signature})
    assert info.value.status == 401
    assert typeform.handle_webhook(body, {"typeform-signature": signed(body)["Typeform-Signature"]})


def test_other_events_and_unreadable_bodies(typeform):
    ping = json.dumps({"event_id": "x", "event_type": "ping"}).encode()
    assert typeform.handle_webhook(ping, signed(ping)) == []
    for body in (b"{nope", json.dumps({"event_type": "form_response", "form_response": {}}).encode()):
        with pytest.raises(WebhookError) as info:
            typeform.handle_webhook(body, signed(body))
        assert info.value.status == 400
