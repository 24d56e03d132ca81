"""A destination that POSTs signed JSON to an HTTPS endpoint: the smallest
real destination, and a template for the ones activation will add.

Every request carries ``Idempotency-Key`` and ``X-CDP-Signature:
sha256=<hex HMAC of the body under signing_secret>``; the receiver verifies
the signature and ignores a key it has already processed.

Bodies: ``{"type": "upsert", "rows": [...]}``, ``{"type": "remove",
"refs": [...]}`` and, for `check`, ``{"type": "ping"}``.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Mapping
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import ActionResult, DeliveryResult, DestinationConnector, Subject
from cdp.hookspecs import hookimpl
from cdp import http as cdp_http
from cdp.http import sign


class WebhookDestinationConfig(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    signing_secret = fields.String(required=True, validate=validate.Length(min=16, max=500),
                                   metadata={"secret": True})


class WebhookDestination(DestinationConnector):
    name = "webhook"
    title = "HTTP webhook (signed JSON)"
    config_schema = WebhookDestinationConfig

    def __init__(self, config: Mapping, *, destination: str | None = None):
        super().__init__(config, destination=destination)
        parts = urlsplit(self.config["url"])
        self.path = parts.path or "/"
        # POST is retried too: the receiver de-duplicates by Idempotency-Key.
        base = cdp_http.DEFAULT_RETRY
        policy = replace(base, methods=frozenset(base.methods | {"POST"}))
        self.http = self.http_client(f"{parts.scheme}://{parts.netloc}", retry=policy,
                                     auth_hint="check the receiver's configuration (and signing_secret)")

    def _post(self, payload: dict, idempotency_key: str) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
        self.http.request("POST", self.path, data=body, headers={
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "X-CDP-Signature": "sha256=" + sign(self.config["signing_secret"], body),
        })

    def check(self) -> None:
        self._post({"type": "ping"}, "ping")

    def deliver(self, rows: list[dict], idempotency_key: str) -> DeliveryResult:
        self._post({"type": "upsert", "rows": rows}, idempotency_key)
        return DeliveryResult(delivered=len(rows))

    def remove(self, subject_refs: list[str], idempotency_key: str | None = None) -> DeliveryResult:
        key = idempotency_key or self.removal_key(subject_refs)
        self._post({"type": "remove", "refs": list(subject_refs)}, key)
        return DeliveryResult(delivered=len(subject_refs))

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        if action == "delete" and subject.external_ids:
            self.remove(subject.external_ids)
            return ActionResult("done", f"removal sent for {len(subject.external_ids)} reference(s)")
        return super().on_subject_request(action, subject)


@hookimpl
def cdp_destination_types():
    return [WebhookDestination]
