"""An e-mail-marketing list destination, modelled on the Mailchimp Marketing
API v3 (https://mailchimp.com/developer/marketing/api/list-members/):
an activation keeps one audience ("list") in step with a segment.

* add / update: ``PUT /3.0/lists/{list_id}/members/{subscriber_hash}``
  (subscriber_hash = MD5 of the lower-cased e-mail, as the API defines it)
  with ``{"email_address", "status_if_new", "merge_fields": {"FNAME", "LNAME"}}``:
  an upsert, so sending the same member twice changes nothing.
* remove: ``DELETE /3.0/lists/{list_id}/members/{subscriber_hash}`` (the
  API's "archive list member"; 404, already gone, counts as removed).
* check: ``GET /3.0/ping``.
* auth: HTTP Basic with any user name and the API key as password; the data
  centre is the key's suffix (``…-us21`` → ``https://us21.api.mailchimp.com``).

PUT and DELETE are idempotent, so the HTTP kit retries them (429, 5xx,
Retry-After honoured) and a re-driven delivery cannot duplicate anyone.
Mailchimp has no idempotency-key header; the key is not needed here.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from cdp.connectors import (ActionResult, AuthError, ConnectorError, DeliveryResult, DestinationConnector,
                            SourceUnavailable, Subject)
from cdp.hookspecs import hookimpl


class EmailListConfig(Schema):
    class Meta:
        unknown = RAISE

    api_key = fields.String(required=True, validate=validate.Regexp(r"^[0-9A-Za-z]{8,64}-[a-z]{2,4}[0-9]{1,3}$",
                                                                      error="not a Mailchimp API key (…-us21)"),
                            metadata={"secret": True})
    list_id = fields.String(required=True, validate=validate.Regexp(r"^[0-9A-Za-z]{1,32}$",
                                                                      error="letters and digits only"))
    # subscribed (the consent gate already checked the purpose) or pending (the list sends its own opt-in).
    status_if_new = fields.String(load_default="subscribed", validate=validate.OneOf(["subscribed", "pending"]))
    # Tests and proxies only; by default the API host of the key's data centre.
    base_url = fields.Url(load_default=None, require_tld=False, schemes={"http", "https"})

    @validates_schema
    def _no_trailing_path(self, data, **kwargs):
        if data.get("base_url") and "?" in data["base_url"]:
            raise ValidationError("no query string", "base_url")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()  # noqa: S324 - the API's own id


class EmailListDestination(DestinationConnector):
    name = "email_list"
    title = "E-mail marketing list (Mailchimp Marketing API v3)"
    config_schema = EmailListConfig
    required_fields = ("email",)
    ref_field = "email"

    def __init__(self, config: Mapping, *, destination: str | None = None):
        super().__init__(config, destination=destination)
        base = self.config["base_url"] or f"https://{self.config['api_key'].rsplit('-', 1)[1]}.api.mailchimp.com"
        self.http = self.http_client(base.rstrip("/") + "/3.0/", auth=("cdp", self.config["api_key"]),
                                     auth_hint="check api_key (Account > Extras > API keys)")
        self.members = f"lists/{self.config['list_id']}/members/"

    def check(self) -> None:
        self.http.get_json("ping")

    def deliver(self, rows: list[dict], idempotency_key: str) -> DeliveryResult:
        result = DeliveryResult()
        for index, row in enumerate(rows):
            email = row.get("email")
            if not email:
                result.failed += 1
                result.errors.append((index, "no e-mail address"))
                continue
            body = {"email_address": email, "status_if_new": self.config["status_if_new"]}
            merge = {k: row[f] for k, f in (("FNAME", "first_name"), ("LNAME", "last_name")) if row.get(f)}
            if merge:
                body["merge_fields"] = merge
            try:
                self.http.request("PUT", self.members + subscriber_hash(email), json=body)
            except (AuthError, SourceUnavailable):
                raise  # the whole delivery fails (and is re-driven later)
            except ConnectorError as exc:  # this member refused (e.g. HTTP 400 invalid address): the others go on
                result.failed += 1
                result.errors.append((index, str(exc)))
                continue
            result.delivered += 1
        return result

    def remove(self, subject_refs: list[str], idempotency_key: str | None = None) -> DeliveryResult:
        for email in subject_refs:
            self.http.request("DELETE", self.members + subscriber_hash(email), allow=(404,))
        return DeliveryResult(delivered=len(subject_refs))

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        emails = subject.identifiers.get("email") or []
        if action == "delete" and emails:
            self.remove(emails)
            return ActionResult("done", f"{len(emails)} address(es) archived in list {self.config['list_id']}")
        return super().on_subject_request(action, subject)


@hookimpl
def cdp_destination_types():
    return [EmailListDestination]
