"""Nuvemshop (Tiendanube) orders and customers, mapped to records: each order
with a `purchase` event, each customer with identifiers, address and the
e-mail marketing opt-in.

API (https://tiendanube.github.io/api-documentation/):
* ``GET https://api.nuvemshop.com.br/v1/{store_id}/orders`` and ``…/customers``
  with headers ``Authentication: bearer <access_token>`` (their name, not
  ``Authorization``) and a ``User-Agent`` naming the app and a contact
  (required by Nuvemshop; requests without one are refused).
* ``page``/``per_page`` (at most 200); asking past the last page answers 404
  ("Last page is N"), which ends the listing. ``updated_at_min`` (ISO 8601,
  inclusive) makes reads incremental; the cursor is a :class:`PassCursor`
  over ``updated_at``.
* Orders: ``customer`` (id, name, email, identification = CPF/CNPJ, phone),
  ``contact_*`` fields, ``billing_*`` address, ``shipping_address``,
  ``products[]``, ``total`` (a decimal string in the store's ``currency``),
  ``status``/``payment_status``, ``created_at``/``updated_at``
  ("2026-03-02T12:14:33+0000").
* Webhooks (``order/*``, ``customer/*``): body ``{"store_id", "event", "id"}``
  signed with ``x-linkedstore-hmac-sha256`` = hex HMAC-SHA256 of the body under
  the app's client secret (``app_secret``); each delivery fetches the order or
  customer it names.
"""
from __future__ import annotations

import json
from datetime import timezone
from typing import Any, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import ActionResult, Batch, ConnectorError, MalformedResponse, SourceConnector, Subject, WebhookError
from cdp.hookspecs import hookimpl
from cdp.http import verify_signature
from plugins._common import PassCursor, compact, document_kind, header, parse_date

STREAMS = ("orders", "customers")


class NuvemshopConfig(Schema):
    class Meta:
        unknown = RAISE

    store_id = fields.String(required=True, validate=validate.Regexp(r"^\d{1,12}$", error="Must be the numeric store id."))
    access_token = fields.String(required=True, validate=validate.Length(min=8, max=200), metadata={"secret": True})
    user_agent = fields.String(required=True, validate=validate.Length(min=3, max=200), metadata={
        "description": "Required by Nuvemshop: your app and a contact, e.g. 'Loja CDP (ti@loja.com.br)'."})
    base_url = fields.Url(require_tld=False, schemes={"http", "https"},
                          metadata={"description": "Override https://api.nuvemshop.com.br/v1 (proxy, tests)."})
    per_page = fields.Integer(load_default=100, validate=validate.Range(1, 200))
    start_date = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None)
    app_secret = fields.String(validate=validate.Length(min=8, max=200), metadata={"secret": True})


class Nuvemshop(SourceConnector):
    name = "nuvemshop"
    title = "Nuvemshop / Tiendanube (orders, customers)"
    config_schema = NuvemshopConfig

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        base = (self.config.get("base_url") or "https://api.nuvemshop.com.br/v1").rstrip("/")
        self.http = self.http_client(f"{base}/{self.config['store_id']}", headers={
            "Authentication": f"bearer {self.config['access_token']}",
            "User-Agent": self.config["user_agent"],
        }, auth_hint="check access_token (and that the app is still installed in the store)")

    def check(self) -> None:
        self._page("orders", {}, 1, 1)

    def streams(self) -> list[str]:
        return list(STREAMS)

    def read(self, stream: str = "orders", cursor: Any = None, batch_size: int = 100) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise ConnectorError(f"nuvemshop: no stream {stream!r} (orders, customers)")
        state = PassCursor.load(cursor, self.config["start_date"])
        size = max(1, min(self.config["per_page"], batch_size))
        params = {"updated_at_min": state.since.isoformat()} if state.since else {}
        page = state.page
        while True:
            rows = self._page(stream, params, page, size)
            batch = Batch(records=[])
            for row in rows:
                if not isinstance(row, dict) or "id" not in row:
                    raise MalformedResponse(f"nuvemshop: malformed {stream} page: an entry has no id")
                key, when = str(row["id"]), parse_date(row.get("updated_at"))
                if state.already_read(key, when):
                    continue
                batch.records.append(self.map_order(row) if stream == "orders" else self.map_customer(row))
                state.note(key, when)
            more = len(rows) >= size
            batch.cursor = state.dump(page + 1 if more else None)
            yield batch
            if not more:
                return
            page += 1

    def _page(self, stream: str, params: dict, page: int, size: int) -> list:
        response = self.http.request("GET", f"/{stream}", params={**params, "page": page, "per_page": size},
                                     allow=(404,))
        if response.status_code == 404:
            if page > 1:
                return []  # "Last page is N": the previous page was the last one
            raise ConnectorError("nuvemshop: store not found (HTTP 404): check store_id")
        body = self.http.json_of(response)
        return self.http.items_of(body, lambda b: b, f"/{stream}")

    # -- mapping --
    def map_order(self, order: dict) -> dict:
        customer = order.get("customer") if isinstance(order.get("customer"), dict) else {}
        identifiers = _identifiers(order.get("contact_email") or customer.get("email"),
                                   order.get("contact_phone") or customer.get("phone") or order.get("billing_phone"),
                                   order.get("contact_identification") or customer.get("identification"),
                                   customer.get("id"))
        traits = compact({
            "full_name": order.get("contact_name") or customer.get("name") or order.get("billing_name"),
            "street": order.get("billing_address"), "street_number": order.get("billing_number"),
            "complement": order.get("billing_floor"), "neighborhood": order.get("billing_locality"),
            "postal_code": order.get("billing_zipcode"), "city": order.get("billing_city"),
            "state": order.get("billing_province"), "country": order.get("billing_country"),
        })
        shipping = order.get("shipping_address") if isinstance(order.get("shipping_address"), dict) else {}
        items = [compact({"id": str(p.get("id")), "product_id": str(p.get("product_id") or ""),
                          "variant_id": str(p.get("variant_id") or ""), "name": p.get("name"), "sku": p.get("sku"),
                          "quantity": p.get("quantity"), "price": p.get("price")})
                 for p in order.get("products") or [] if isinstance(p, dict)]
        attributes = compact({
            "number": order.get("number"), "status": order.get("status"),
            "payment_status": order.get("payment_status"), "shipping_status": order.get("shipping_status"),
            "gateway": order.get("gateway"), "items": items,
            # Where it went (city/state only: the full shipping address is the customer's business).
            "shipping_city": shipping.get("city"), "shipping_state": shipping.get("province"),
        })
        event = {"type": "purchase", "id": str(order["id"]), "occurred_at": _iso(order.get("created_at") or order.get("updated_at")),
                 "currency": order.get("currency") or "BRL", "attributes": attributes}
        if order.get("total") not in (None, ""):
            event["amount"] = str(order["total"])
        return _record(f"order:{order['id']}", order, identifiers, traits, events=[event])

    def map_customer(self, customer: dict) -> dict:
        identifiers = _identifiers(customer.get("email"), customer.get("phone"), customer.get("identification"),
                                   customer.get("id"))
        address = customer.get("default_address") if isinstance(customer.get("default_address"), dict) else {}
        traits = compact({
            "full_name": customer.get("name"),
            "street": address.get("address") or customer.get("billing_address"),
            "street_number": address.get("number") or customer.get("billing_number"),
            "complement": address.get("floor") or customer.get("billing_floor"),
            "neighborhood": address.get("locality") or customer.get("billing_locality"),
            "postal_code": address.get("zipcode") or customer.get("billing_zipcode"),
            "city": address.get("city") or customer.get("billing_city"),
            "state": address.get("province") or customer.get("billing_province"),
            "country": address.get("country") or customer.get("billing_country"),
        })
        record = _record(f"customer:{customer['id']}", customer, identifiers, traits)
        if isinstance(customer.get("accepts_marketing"), bool):
            record["consents"] = [{
                "purpose": "email_marketing", "legal_basis": "consent",
                "status": "granted" if customer["accepts_marketing"] else "revoked",
                "occurred_at": _iso(customer.get("accepts_marketing_updated_at") or customer.get("updated_at")),
                "evidence": {"channel": "nuvemshop_checkout"},
            }]
        return record

    # -- webhooks and subject requests --
    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        secret = self.config.get("app_secret")
        if not secret:
            raise WebhookError(404, "nuvemshop: webhooks are not enabled for this source (set app_secret)")
        if not verify_signature(secret, body, header(headers, "x-linkedstore-hmac-sha256")):
            raise WebhookError(401, "nuvemshop: bad or missing x-linkedstore-hmac-sha256")
        try:
            note = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookError(400, "nuvemshop: body is not JSON") from None
        if not isinstance(note, dict) or not isinstance(note.get("event"), str):
            raise WebhookError(400, "nuvemshop: event missing from the notification")
        if str(note.get("store_id")) != self.config["store_id"]:
            raise WebhookError(400, "nuvemshop: notification is for another store")
        kind = note["event"].split("/")[0]
        if kind not in ("order", "customer") or not str(note.get("id", "")).isdigit():
            return []  # product/*, app/*…: nothing about a person
        path = f"/{kind}s/{note['id']}"
        response = self.http.request("GET", path, allow=(404,))
        if response.status_code == 404:
            return []
        row = self.http.json_of(response)
        if not isinstance(row, dict) or "id" not in row:
            raise MalformedResponse(f"nuvemshop: malformed {kind} (no id)")
        return [self.map_order(row) if kind == "order" else self.map_customer(row)]

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        return ActionResult("manual", (
            "A Nuvemshop não apaga clientes com pedidos pela API: no painel da Nuvemshop, abra o cliente (ids "
            "externos customer:…) e use a opção de exclusão/anonimização de dados pessoais, ou peça ao suporte. / "
            "Nuvemshop does not delete customers with orders through the API: in the Nuvemshop admin, open the "
            "customer (external ids customer:…) and use the personal-data deletion option, or ask support."))


def _identifiers(email, phone, document, customer_id) -> dict:
    identifiers: dict = {}
    if isinstance(email, str) and email.strip():
        identifiers["email"] = email.strip()
    if isinstance(phone, str) and phone.strip():
        identifiers["phone"] = phone.strip()
    doc = document_kind(document)
    if doc:
        identifiers[doc[0]] = doc[1]
    if customer_id not in (None, ""):
        identifiers["custom"] = {"nuvemshop_customer": str(customer_id)}
    return identifiers


def _record(external_id: str, row: dict, identifiers: dict, traits: dict, events=None) -> dict:
    record: dict = {"external_id": external_id}
    observed = _iso(row.get("updated_at") or row.get("created_at"))
    if observed:
        record["observed_at"] = observed
    if identifiers:
        record["identifiers"] = identifiers
    if traits:
        record["traits"] = traits
    if events:
        record["events"] = events
    return record


def _iso(value: Any) -> str | None:
    parsed = parse_date(value)
    return parsed.isoformat() if parsed else None


@hookimpl
def cdp_source_types():
    return [Nuvemshop]
