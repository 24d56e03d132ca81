"""RD Station Marketing conversion webhooks: each lead in a delivery becomes
a record with a `form_submission` event and the lead's LGPD legal bases as
consent signals.

Payload (the "conversão" webhook trigger; docs: developers.rdstation.com):
    {"leads": [{"id", "uuid", "email", "name", "personal_phone", "mobile_phone",
                "city", "state", "tags", "lead_stage", "number_conversions",
                "first_conversion": {"content": {"identificador", ...}, "created_at", "conversion_origin": {...}},
                "last_conversion":  {"content": {"identificador", ...}, "created_at", "conversion_origin": {...}},
                "legal_bases": [{"category": "communications", "type": "consent", "status": "granted"}]}]}

Mapping: e-mail and phones → identifiers, name/city/state → traits, the RD
lead uuid → ``custom:rd_station_lead``; one ``form_submission`` event at the
last conversion (``conversion_identifier`` = ``last_conversion.content.identificador``,
the first conversion's and the traffic source as attributes; the form's
free fields are not kept). ``legal_bases`` → consents: ``category`` →
purpose through ``purposes`` (default ``communications`` → ``email_marketing``);
``type`` → LGPD Art. 7 basis (``consent`` → ``consent`` (I),
``legitimate_interest`` → ``legitimate_interest`` (IX),
``pre_existent_contract`` → ``contract`` (V)); ``status`` ``granted`` →
granted, ``declined`` → revoked (consent) or opted_out (other bases).
The record is named by the lead and the conversion's time, so a repeated
delivery is a duplicate and a new conversion a new record.

Authenticity: RD Station does not sign webhooks. The URL configured in RD
Station must carry a secret token, checked here in constant time, sent
either as the header ``X-CDP-Webhook-Token: <webhook_token>`` (where the
sender can add headers) or as the password of the URL's user info —
``https://rd:<webhook_token>@cdp.example.com.br/api/v1/webhooks/<source>`` —
which HTTP clients send as ``Authorization: Basic``. Keep the URL secret;
rotate the token if it leaks.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import SourceConnector, WebhookError
from cdp.hookspecs import hookimpl
from plugins._common import compact, header, parse_date, same_secret

LEGAL_BASIS = {"consent": "consent", "legitimate_interest": "legitimate_interest",
               "pre_existent_contract": "contract"}
SNAKE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RdStationConfig(Schema):
    class Meta:
        unknown = RAISE

    webhook_token = fields.String(required=True, validate=validate.Length(min=24, max=200), metadata={"secret": True})
    purposes = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.Regexp(SNAKE.pattern)),
                           load_default=lambda: {"communications": "email_marketing"},
                           metadata={"description": "RD Station legal-base category -> cdp purpose."})
    notice_version = fields.String(validate=validate.Length(max=100), load_default=None)


class RdStation(SourceConnector):
    name = "rd_station"
    title = "RD Station Marketing (conversion webhook)"
    config_schema = RdStationConfig

    def streams(self) -> list[str]:
        return []  # nothing to pull: RD Station posts conversions

    def read(self, stream: str = "", cursor: Any = None, batch_size: int = 500):
        return iter(())

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        if not self._authentic(headers):
            raise WebhookError(401, "rd_station: missing or wrong webhook token (X-CDP-Webhook-Token or URL password)")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookError(400, "rd_station: body is not JSON") from None
        leads = payload.get("leads") if isinstance(payload, dict) else None
        if not isinstance(leads, list):
            raise WebhookError(400, "rd_station: body has no leads list")
        records = []
        for position, lead in enumerate(leads):
            if not isinstance(lead, dict) or not (lead.get("uuid") or lead.get("id")):
                raise WebhookError(400, f"rd_station: lead {position} has no uuid")
            records.append(self.map_lead(lead))
        return records

    def _authentic(self, headers: Mapping[str, str]) -> bool:
        token = self.config["webhook_token"]
        if same_secret(header(headers, "X-CDP-Webhook-Token"), token):
            return True
        auth = header(headers, "Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                _, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return same_secret(password, token)
        return False

    def map_lead(self, lead: dict) -> dict:
        lead_id = str(lead.get("uuid") or lead["id"])
        last = lead.get("last_conversion") if isinstance(lead.get("last_conversion"), dict) else {}
        first = lead.get("first_conversion") if isinstance(lead.get("first_conversion"), dict) else {}
        when = parse_date(last.get("created_at")) or parse_date(lead.get("created_at"))
        occurred = when.isoformat() if when else None
        conversion = (last.get("content") or {}).get("identificador") or lead.get("conversion_identifier")
        origin = last.get("conversion_origin") if isinstance(last.get("conversion_origin"), dict) else {}
        identifiers: dict = {}
        if isinstance(lead.get("email"), str) and lead["email"].strip():
            identifiers["email"] = lead["email"].strip()
        phones = [p.strip() for p in (lead.get("mobile_phone"), lead.get("personal_phone"))
                  if isinstance(p, str) and p.strip()]
        if phones:
            identifiers["phone"] = phones
        identifiers["custom"] = {"rd_station_lead": lead_id}
        event = {"type": "form_submission", "id": f"{lead_id}:{occurred or 'unknown'}",
                 "attributes": compact({
                     "conversion_identifier": conversion,
                     "first_conversion": (first.get("content") or {}).get("identificador"),
                     "first_conversion_at": first.get("created_at"),
                     "number_conversions": lead.get("number_conversions"),
                     "source": origin.get("source"), "medium": origin.get("medium"),
                     "campaign": origin.get("campaign"), "lead_stage": lead.get("lead_stage"),
                     "tags": lead.get("tags") if isinstance(lead.get("tags"), list) else None,
                     "channel": "rd_station"})}
        if occurred:
            event["occurred_at"] = occurred
        record: dict = {"external_id": f"lead:{lead_id}:{occurred or 'unknown'}", "identifiers": identifiers,
                        "events": [event]}
        if occurred:
            record["observed_at"] = occurred
        traits = compact({"full_name": lead.get("name"), "city": lead.get("city"), "state": lead.get("state")})
        if traits:
            record["traits"] = traits
        consents = [c for c in (self._consent(b, occurred, conversion) for b in lead.get("legal_bases") or []) if c]
        if consents:
            record["consents"] = consents
        return record

    def _consent(self, basis: Any, occurred: str | None, conversion: str | None) -> dict | None:
        if not isinstance(basis, dict) or basis.get("type") not in LEGAL_BASIS:
            return None
        category = str(basis.get("category") or "")
        purpose = self.config["purposes"].get(category) or (category if SNAKE.match(category) else None)
        if purpose is None or basis.get("status") not in ("granted", "declined"):
            return None
        legal_basis = LEGAL_BASIS[basis["type"]]
        status = "granted" if basis["status"] == "granted" else ("revoked" if legal_basis == "consent" else "opted_out")
        consent = {"purpose": purpose, "status": status, "legal_basis": legal_basis,
                   "evidence": compact({"channel": "rd_station", "conversion_identifier": conversion,
                                        "rd_station_type": basis["type"], "rd_station_category": category,
                                        "notice_version": self.config.get("notice_version")})}
        if occurred:
            consent["occurred_at"] = occurred
        return consent


@hookimpl
def cdp_source_types():
    return [RdStation]
