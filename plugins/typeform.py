"""Typeform webhooks: each ``form_response`` becomes a record with a
``form_submission`` event and, for opinion-scale / NPS answers, one
``survey_response`` event per score (attributes ``nps`` 0–10, ``csat`` 1–5
or ``ces`` 1–5).

Payload (https://www.typeform.com/developers/webhooks/):
    {"event_id", "event_type": "form_response",
     "form_response": {"form_id", "token", "landed_at", "submitted_at",
                       "hidden": {"cpf": "...", ...},
                       "definition": {"id", "title", "fields": [{"id", "ref", "type", "title"}]},
                       "answers": [{"type": "email", "email": "...", "field": {"id", "ref", "type"}},
                                   {"type": "phone_number", "phone_number": "+55..."},
                                   {"type": "text", "text": "..."},
                                   {"type": "number", "number": 9, "field": {"type": "nps" | "opinion_scale" | "rating"}}, ...]}}
Authenticity: ``Typeform-Signature: sha256=<base64 HMAC-SHA256 of the raw
body under the webhook's secret>`` (set the same secret in Typeform and in
``webhook_secret``).

Mapping: ``email`` and ``phone_number`` answers → identifiers. Other
answers and hidden fields are kept only when the configuration names them
(``fields`` by field ref, ``hidden`` by hidden key) with a target: an
identifier (``email``, ``phone``, ``cpf``, ``cnpj``) or a trait
(``full_name``, ``city``…) — free text is not stored otherwise. Scores:
an ``nps`` field is NPS by itself; ``scores`` maps other field refs
(opinion scale, rating) to ``nps``/``csat``/``ces``; a value outside the
scale's range is not stored (logged without the value). The record is
named by the response token, so Typeform's retries are duplicates.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import SourceConnector, WebhookError
from cdp.hookspecs import hookimpl
from cdp.http import verify_signature
from plugins._common import header, parse_date

log = logging.getLogger(__name__)

IDENTIFIERS = ("email", "phone", "cpf", "cnpj")
TRAITS = ("first_name", "last_name", "full_name", "birth_date", "gender", "street", "street_number", "complement",
          "neighborhood", "postal_code", "city", "state", "country")
SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 5)}
SCORED_FIELDS = ("nps", "opinion_scale", "rating")


class TypeformConfig(Schema):
    class Meta:
        unknown = RAISE

    webhook_secret = fields.String(required=True, validate=validate.Length(min=16, max=200), metadata={"secret": True})
    fields_ = fields.Dict(data_key="fields", attribute="fields", keys=fields.String(),
                          values=fields.String(validate=validate.OneOf(IDENTIFIERS + TRAITS)), load_default=dict,
                          metadata={"description": "Field ref -> identifier or trait it fills."})
    hidden = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(IDENTIFIERS + TRAITS)),
                         load_default=dict, metadata={"description": "Hidden field -> identifier or trait."})
    scores = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(tuple(SCALES))),
                         load_default=dict, metadata={"description": "Field ref -> nps, csat or ces."})


class Typeform(SourceConnector):
    name = "typeform"
    title = "Typeform (form responses webhook)"
    config_schema = TypeformConfig

    def streams(self) -> list[str]:
        return []  # nothing to pull: Typeform posts responses

    def read(self, stream: str = "", cursor: Any = None, batch_size: int = 500):
        return iter(())

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        if not verify_signature(self.config["webhook_secret"], body, header(headers, "Typeform-Signature"),
                                prefix="sha256=", encoding="base64"):
            raise WebhookError(401, "typeform: bad or missing Typeform-Signature")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookError(400, "typeform: body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookError(400, "typeform: body is not a JSON object")
        if payload.get("event_type") != "form_response":
            return []
        response = payload.get("form_response")
        if not isinstance(response, dict) or not response.get("token") or not isinstance(response.get("answers"), list):
            raise WebhookError(400, "typeform: form_response without token or answers")
        return [self.map_response(response)]

    def map_response(self, response: dict) -> dict:
        token = str(response["token"])
        submitted = parse_date(response.get("submitted_at"))
        occurred = submitted.isoformat() if submitted else None
        definition = response.get("definition") if isinstance(response.get("definition"), dict) else {}
        titles = {f.get("ref"): f.get("title") for f in definition.get("fields") or [] if isinstance(f, dict)}
        form_id = str(response.get("form_id") or definition.get("id") or "")
        identifiers: dict[str, list[str]] = {}
        traits: dict[str, str] = {}

        def put(target: str, value: Any) -> None:
            if not isinstance(value, (str, int)) or str(value).strip() == "":
                return
            if target in IDENTIFIERS:
                values = identifiers.setdefault(target, [])
                if str(value).strip() not in values:
                    values.append(str(value).strip())
            else:
                traits.setdefault(target, str(value).strip())

        scores = []
        for answer in response["answers"]:
            if not isinstance(answer, dict):
                continue
            field = answer.get("field") if isinstance(answer.get("field"), dict) else {}
            ref, kind = field.get("ref"), answer.get("type")
            value = answer.get(kind) if isinstance(kind, str) else None
            if kind == "email":
                put("email", value)
            elif kind == "phone_number":
                put("phone", value)
            if ref in self.config["fields"] and kind in ("text", "email", "phone_number", "number", "date"):
                put(self.config["fields"][ref], value)
            scale = self.config["scores"].get(ref) or ("nps" if field.get("type") == "nps" else None)
            if scale and field.get("type") in SCORED_FIELDS and kind == "number":
                low, high = SCALES[scale]
                if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
                    scores.append((ref, scale, value))
                else:
                    log.warning("typeform: a %s answer outside %d-%d was not stored (form %s)", scale, low, high, form_id)
        for key, target in self.config["hidden"].items():
            put(target, (response.get("hidden") or {}).get(key))

        common = {"form_id": form_id, "form_title": definition.get("title")}
        events = [{"type": "form_submission", "id": token, "occurred_at": occurred,
                   "attributes": {**common, "answers": len(response["answers"]), "channel": "typeform"}}]
        for ref, scale, value in scores:
            events.append({"type": "survey_response", "id": f"{token}:{ref}", "occurred_at": occurred,
                           "attributes": {**common, scale: value, "field_ref": ref, "question": titles.get(ref)}})
        if occurred is None:
            raise WebhookError(400, "typeform: form_response without submitted_at")
        record: dict = {"external_id": f"response:{token}", "observed_at": occurred, "events": events}
        if identifiers:
            record["identifiers"] = {k: v[0] if len(v) == 1 else v for k, v in identifiers.items()}
        if traits:
            record["traits"] = traits
        return record


@hookimpl
def cdp_source_types():
    return [Typeform]
