"""Exemplo CRM contacts, the worked example of docs/plugins.md.

API (fictional):
    GET {base_url}/v1/contacts?updated_after=ISO-8601&limit=100     X-Api-Key: {api_key}
    -> {"contacts": [{"id", "email", "mobile", "name", "cpf", "city", "uf", "updated_at", "opt_in_email"}],
        "next": "/v1/contacts?cursor=…" | null}
    DELETE {base_url}/v1/contacts/{id}  -> 204
    Webhooks: POST with X-Exemplo-Signature: sha256=<hex HMAC-SHA256 of the body under webhook_secret>,
              body {"event": "contact.updated", "contact": {...}}
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import (
    ActionResult,
    Batch,
    ConnectorError,
    MalformedResponse,
    SourceConnector,
    Subject,
    WebhookError,
)
from cdp.hookspecs import hookimpl
from cdp.http import verify_signature

CONTACTS = "/v1/contacts"


class ExampleConfig(Schema):
    class Meta:
        unknown = RAISE

    base_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    api_key = fields.String(required=True, validate=validate.Length(min=8), metadata={"secret": True})
    webhook_secret = fields.String(validate=validate.Length(min=16), metadata={"secret": True})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 200))


class ExampleCrm(SourceConnector):
    name = "example_crm"
    title = "Exemplo CRM (contacts)"
    config_schema = ExampleConfig

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        # The kit's client: timeouts, retries on 429/5xx, AuthError naming this connector.
        self.http = self.http_client(self.config["base_url"], headers={"X-Api-Key": self.config["api_key"]},
                                     auth_hint="check api_key")

    def check(self) -> None:
        self.http.get_json(CONTACTS, params={"limit": 1})

    def streams(self) -> list[str]:
        return ["contacts"]

    def read(self, stream: str = "contacts", cursor: Any = None, batch_size: int = 100) -> Iterator[Batch]:
        # Cursor: the newest updated_at read, and the ids read at exactly that instant
        # (updated_after is inclusive), so reading again from it yields nothing new.
        since = (cursor or {}).get("updated_after") or "1970-01-01T00:00:00+00:00"
        seen = set((cursor or {}).get("seen") or [])
        params = {"updated_after": since, "limit": min(self.config["limit"], batch_size)}
        for page in self.http.pages_by_cursor(CONTACTS, items="contacts", next="next", params=params):
            records = []
            for contact in page.items:
                updated = _iso(contact.get("updated_at")) if isinstance(contact, dict) else None
                if updated is None or "id" not in contact:
                    raise MalformedResponse("example_crm: a contact has no id or updated_at")
                key = str(contact["id"])
                if updated < _iso(since) or (updated == _iso(since) and key in seen):
                    continue
                records.append(self.map_contact(contact))
                if updated > _iso(since):
                    since, seen = updated.isoformat(), set()
                seen.add(key)
            yield Batch(records, {"updated_after": since, "seen": sorted(seen)})

    def map_contact(self, contact: dict) -> dict:
        """One Exemplo CRM contact -> one record in cdp's common record model."""
        identifiers = {}
        for source_field, kind in (("email", "email"), ("mobile", "phone"), ("cpf", "cpf")):
            if contact.get(source_field):
                identifiers[kind] = contact[source_field]
        traits = {"full_name": contact.get("name"), "city": contact.get("city"), "state": contact.get("uf")}
        record = {
            "external_id": str(contact["id"]),
            "observed_at": contact["updated_at"],
            "identifiers": identifiers,
            "traits": {k: v for k, v in traits.items() if v},
        }
        if contact.get("opt_in_email") is not None:
            record["consents"] = [{
                "purpose": "email_marketing",
                "status": "granted" if contact["opt_in_email"] else "revoked",
                "legal_basis": "consent",
                "occurred_at": contact["updated_at"],
                "evidence": {"channel": "exemplo_crm"},
            }]
        return record

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        secret = self.config.get("webhook_secret")
        if not secret:
            raise WebhookError(404, "example_crm: webhooks are off (set webhook_secret)")
        signature = next((v for k, v in headers.items() if k.lower() == "x-exemplo-signature"), None)
        if not verify_signature(secret, body, signature, prefix="sha256="):
            raise WebhookError(401, "example_crm: bad or missing X-Exemplo-Signature")
        try:
            event = json.loads(body)
        except ValueError:
            raise WebhookError(400, "example_crm: body is not JSON") from None
        if event.get("event") not in ("contact.created", "contact.updated") or not isinstance(event.get("contact"), dict):
            return []
        return [self.map_contact(event["contact"])]

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        if action != "delete":
            return super().on_subject_request(action, subject)  # corrections: a person does it (pt-BR / English)
        try:
            for contact_id in subject.external_ids:
                self.http.request("DELETE", f"{CONTACTS}/{contact_id}", allow=(404,))
        except ConnectorError as exc:
            return ActionResult("failed", str(exc))
        return ActionResult("done", f"{len(subject.external_ids)} contact(s) deleted in Exemplo CRM")


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@hookimpl
def cdp_source_types():
    return [ExampleCrm]
