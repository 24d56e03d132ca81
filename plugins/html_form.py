"""Plain HTML forms (newsletter, "fale conosco", lead capture) posted to
``POST /forms/<source>`` as application/x-www-form-urlencoded.

The configuration maps form fields to the common record model::

    fields:   {email: email, celular: phone, nome: full_name, cidade: city, aceito_news: "consent:email_marketing"}
    honeypot: website            # a hidden field people leave empty; bots fill it in (then nothing is stored)
    redirect_url: https://loja.example.com.br/obrigado   # optional; otherwise a thank-you page in pt-BR

A consent checkbox (``consent:<purpose>``) that is ticked grants that
purpose, with the form and the notice version as evidence; an unticked box
records nothing (it is not a revocation).

Idempotency: the record's external id is a hash of the source, the mapped
values and the day, and times are kept to the minute, so a form sent twice
(a double click, a browser resend) is stored once; the same person sending
other values, or on another day, makes another record.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping
from urllib.parse import parse_qs, urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from cdp.connectors import Batch, SourceConnector, WebhookError
from cdp.hookspecs import hookimpl
from plugins._common import header

IDENTIFIERS = ("email", "phone", "cpf", "cnpj")
TRAITS = ("first_name", "last_name", "full_name", "birth_date", "gender", "street", "street_number", "complement",
          "neighborhood", "postal_code", "city", "state", "country")
MAX_FIELDS = 100
MAX_VALUE = 2000
TRUTHY = {"1", "on", "true", "sim", "yes", "s", "y", "aceito", "checked"}


class HtmlFormConfig(Schema):
    class Meta:
        unknown = RAISE

    # "fields" in the configuration (a schema attribute of that name would hide marshmallow's module).
    field_map = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)), values=fields.String(),
                            required=True, data_key="fields")
    honeypot = fields.String(load_default="website", validate=validate.Length(min=1, max=100))
    redirect_url = fields.Url(require_tld=False, schemes={"http", "https"})
    event_type = fields.String(load_default="form_submitted", validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$"))
    notice_version = fields.String(validate=validate.Length(max=100))
    allowed_origins = fields.List(fields.Url(require_tld=False, schemes={"http", "https"}), load_default=list)

    @validates("field_map")
    def _targets(self, value, **kwargs):
        if not value:
            raise ValidationError("Map at least one form field.")
        bad = sorted(t for t in value.values() if not _valid_target(t))
        if bad:
            raise ValidationError(f"Unknown target(s) {bad}: use {', '.join(IDENTIFIERS + TRAITS)} "
                                  "or consent:<purpose>.")
        if not any(t in IDENTIFIERS for t in value.values()):
            raise ValidationError("Map at least one identifier field (email, phone, cpf or cnpj).")


def _valid_target(target: str) -> bool:
    if target in IDENTIFIERS or target in TRAITS:
        return True
    if target.startswith("consent:"):
        purpose = target.split(":", 1)[1]
        return bool(purpose) and purpose.replace("_", "a").isalnum() and purpose[0].isalpha() and purpose.islower()
    return False


class HtmlForm(SourceConnector):
    name = "html_form"
    title = "HTML form (POST /forms/<source>)"
    config_schema = HtmlFormConfig

    def streams(self) -> list[str]:
        return []  # nothing to pull: records arrive when people send the form

    def read(self, stream: str = "", cursor: Any = None, batch_size: int = 500) -> Iterator[Batch]:
        return iter(())

    @property
    def redirect_url(self) -> str | None:
        return self.config.get("redirect_url")

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        content_type = (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise WebhookError(415, "html_form: send the form as application/x-www-form-urlencoded")
        self._check_origin(headers)
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS,
                            strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise WebhookError(400, "html_form: the form body cannot be read (UTF-8, up to 100 fields)") from None
        if any(v.strip() for v in form.get(self.config["honeypot"], [])):
            return []  # a bot filled the hidden field: answer as usual, store nothing
        return [self.map_form(form)]

    def _check_origin(self, headers: Mapping[str, str]) -> None:
        allowed = {_origin(u) for u in self.config["allowed_origins"]}
        if not allowed:
            return
        sent = header(headers, "Origin") or _origin(header(headers, "Referer") or "")
        if sent not in allowed:
            raise WebhookError(403, "html_form: this form may only be sent from its own site")

    def map_form(self, form: Mapping[str, list[str]], now: datetime | None = None) -> dict:
        now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        identifiers: dict[str, list[str]] = {}
        traits: dict[str, str] = {}
        purposes: list[str] = []
        for field_name, target in self.config["field_map"].items():
            values = [v.strip()[:MAX_VALUE] for v in form.get(field_name, []) if v.strip()]
            if not values:
                continue
            if target in IDENTIFIERS:
                identifiers.setdefault(target, []).extend(values)
            elif target.startswith("consent:"):
                if values[0].lower() in TRUTHY:
                    purposes.append(target.split(":", 1)[1])
            else:
                traits[target] = values[0]
        if not identifiers:
            raise WebhookError(422, "html_form: fill in at least one contact field (e-mail or phone)")
        evidence = {"channel": "web_form", "form": self.source}
        if self.config.get("notice_version"):
            evidence["notice_version"] = self.config["notice_version"]
        at = now.isoformat()
        mapped = {"identifiers": identifiers, "traits": traits, "consents": sorted(purposes)}
        digest = hashlib.sha256(json.dumps([self.source, mapped, now.date().isoformat()], sort_keys=True,
                                           ensure_ascii=False).encode()).hexdigest()[:32]
        record: dict = {
            "external_id": f"form-{digest}",
            "observed_at": at,
            "identifiers": identifiers,
            "events": [{"type": self.config["event_type"], "occurred_at": at, "attributes": {"form": self.source}}],
        }
        if traits:
            record["traits"] = traits
        if purposes:
            record["consents"] = [{"purpose": p, "status": "granted", "legal_basis": "consent", "occurred_at": at,
                                   "evidence": evidence} for p in sorted(purposes)]
        return record


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


@hookimpl
def cdp_source_types():
    return [HtmlForm]
