"""VTEX orders: the OMS API (list orders, then each order's detail) mapped to
a record per order with a `purchase` event.

* List: ``GET /api/oms/pvt/orders`` filtered by ``f_creationDate`` (or
  ``f_authorizedDate``) = ``creationDate:[FROM TO UNTIL]``, ordered by that
  date, ``page``/``per_page`` (VTEX serves at most 30 pages of a query; the
  connector then queries again from the last date it read).
* Detail: ``GET /api/oms/pvt/orders/{orderId}``: ``clientProfileData``
  (e-mail, names, CPF or CNPJ, phone, VTEX profile id), ``shippingData.address``,
  ``items`` and ``value`` (both in cents; amounts are stored in reais).
* Cursor: ``{"since": last order date read, "seen": [order ids at that date]}``;
  the next read asks from ``since`` (inclusive) and skips what it already saw.
  Orders younger than ``settle_minutes`` are left for the next read, as VTEX
  indexes new orders with a delay.
* Marketplace orders often carry a masked e-mail (``…@ct.vtex.com.br``), a
  relay VTEX keeps per customer: it is kept as the e-mail (it still matches
  the customer's other orders in this store) and flagged ``email_masked`` in
  the event, since it will not match any other source.
* Webhooks: a VTEX order hook (Feed v3) pointed at
  ``/api/v1/webhooks/<source>`` with the custom header
  ``X-CDP-Webhook-Token: <webhook_token>`` (VTEX hooks are not signed; the
  token is the shared secret). Each notification fetches the order's detail.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import ActionResult, Batch, MalformedResponse, SourceConnector, Subject, WebhookError
from cdp.hookspecs import hookimpl
from plugins._common import header, parse_date, same_secret

log = logging.getLogger(__name__)

LIST_PATH = "/api/oms/pvt/orders"
MAX_PAGES = 30  # VTEX refuses pages past 30 for one query
MASKED_EMAIL_DOMAIN = "ct.vtex.com.br"
DATE_FIELDS = ("creationDate", "authorizedDate")


class VtexConfig(Schema):
    class Meta:
        unknown = RAISE

    account = fields.String(required=True, validate=validate.Regexp(
        r"^[a-z0-9][a-z0-9-]{0,62}$", error="Must be the VTEX account name (lowercase letters, digits, -)."))
    environment = fields.String(load_default="vtexcommercestable", validate=validate.Regexp(r"^[a-z0-9-]{1,63}$"))
    base_url = fields.Url(require_tld=False, schemes={"http", "https"},
                          metadata={"description": "Override https://{account}.{environment}.com.br (proxy, tests)."})
    app_key = fields.String(required=True, validate=validate.Length(min=1, max=200), metadata={"secret": True})
    app_token = fields.String(required=True, validate=validate.Length(min=1, max=500), metadata={"secret": True})
    date_field = fields.String(load_default="creationDate", validate=validate.OneOf(DATE_FIELDS))
    statuses = fields.List(fields.String(validate=validate.Regexp(r"^[a-z-]{1,40}$")), load_default=list,
                           metadata={"description": "Only orders in these statuses (f_status), e.g. invoiced."})
    start_date = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None,
                                      metadata={"description": "First sync reads orders from this date."})
    per_page = fields.Integer(load_default=100, validate=validate.Range(1, 100))
    settle_minutes = fields.Integer(load_default=5, validate=validate.Range(0, 1440))
    webhook_token = fields.String(validate=validate.Length(min=16, max=200), metadata={"secret": True})


class VtexOrders(SourceConnector):
    name = "vtex"
    title = "VTEX (orders)"
    config_schema = VtexConfig

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        c = self.config
        self.base_url = c.get("base_url") or f"https://{c['account']}.{c['environment']}.com.br"
        self.http = self.http_client(self.base_url, headers={
            "X-VTEX-API-AppKey": c["app_key"],
            "X-VTEX-API-AppToken": c["app_token"],
        }, auth_hint="check app_key/app_token (and the key's OMS permissions)")

    # -- contract --
    def check(self) -> None:
        body = self.http.get_json(LIST_PATH, params={"per_page": 1, "page": 1})
        self.http.items_of(body, "list", LIST_PATH)

    def streams(self) -> list[str]:
        return ["orders"]

    def read(self, stream: str = "orders", cursor: Any = None, batch_size: int = 100) -> Iterator[Batch]:
        field = self.config["date_field"]
        state = _Cursor.load(cursor, self.config["start_date"])
        until = datetime.now(timezone.utc) - timedelta(minutes=self.config["settle_minutes"])
        per_page = max(1, min(self.config["per_page"], batch_size))
        while True:
            params = {
                f"f_{field}": f"{field}:[{_vtex_date(state.since)} TO {_vtex_date(until)}]",
                "orderBy": f"{field},asc",
            }
            if self.config["statuses"]:
                params["f_status"] = ",".join(self.config["statuses"])
            pages_read, more_pages = 0, False
            for page in self.http.pages_by_number(LIST_PATH, items="list", params=params, size=per_page,
                                                  last_page=_last_page):
                pages_read += 1
                batch = Batch(records=[])
                for summary in page.items:
                    order_id, when = self._summary(summary, field)
                    if state.already_read(order_id, when) or when > until:
                        continue
                    detail = self.order(order_id)
                    if detail is None:
                        batch.errors.append((f"order {order_id}", {"orderId": ["not found (deleted?)"]}))
                    else:
                        batch.records.append(self.map_order(detail))
                    state.advance(order_id, when)
                batch.cursor = state.dump()
                yield batch
                if page.next is not None and pages_read >= MAX_PAGES:
                    more_pages = True  # VTEX stops at 30 pages: query again from the last date read
                    break
            if not more_pages:
                return

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        token = self.config.get("webhook_token")
        if not token:
            raise WebhookError(404, "vtex: webhooks are not enabled for this source (set webhook_token)")
        if not same_secret(header(headers, "X-CDP-Webhook-Token"), token):
            raise WebhookError(401, "vtex: missing or wrong X-CDP-Webhook-Token header")
        try:
            note = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookError(400, "vtex: body is not JSON") from None
        if not isinstance(note, dict):
            raise WebhookError(400, "vtex: body is not a JSON object")
        if note.get("hookConfig") == "ping":
            return []  # VTEX checks the endpoint when the hook is configured
        order_id = note.get("OrderId")
        if not isinstance(order_id, str) or not order_id:
            raise WebhookError(400, "vtex: OrderId missing from the notification")
        account = (note.get("Origin") or {}).get("Account")
        if account and account != self.config["account"]:
            raise WebhookError(400, "vtex: notification is for another VTEX account")
        detail = self.order(order_id)
        return [self.map_order(detail)] if detail is not None else []

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        return ActionResult("manual", (
            "A VTEX não apaga nem corrige pedidos pela API (são documentos fiscais): abra no Admin da VTEX os "
            "pedidos informados (ids externos) e peça a anonimização do cliente pelo processo de titulares de "
            "dados da VTEX (Admin ou suporte). / VTEX does not delete or correct orders through its API (they are "
            "tax documents): open the listed orders (external ids) in the VTEX Admin and request the customer's "
            "anonymization through VTEX's data-subject process (Admin or support)."))

    # -- VTEX specifics --
    def order(self, order_id: str) -> dict | None:
        response = self.http.request("GET", f"{LIST_PATH}/{order_id}", allow=(404,))
        if response.status_code == 404:
            return None
        detail = self.http.json_of(response)
        if not isinstance(detail, dict) or not isinstance(detail.get("orderId"), str):
            raise MalformedResponse(f"vtex: malformed order detail (no orderId) for order {order_id}")
        return detail

    def _summary(self, summary: Any, field: str) -> tuple[str, datetime]:
        if not isinstance(summary, dict) or not isinstance(summary.get("orderId"), str):
            raise MalformedResponse("vtex: malformed order list: an entry has no orderId")
        when = parse_date(summary.get(field))
        if when is None:
            raise MalformedResponse(f"vtex: malformed order list: order {summary['orderId']} has no {field}")
        return summary["orderId"], when

    def map_order(self, order: dict) -> dict:
        """One order detail → one record in the common model."""
        profile = order.get("clientProfileData") or {}
        address = (order.get("shippingData") or {}).get("address") or {}
        identifiers: dict = {}
        email = (profile.get("email") or "").strip()
        # "1a2b…@ct.vtex.com.br" or "ana@gmail.com-1234b.ct.vtex.com.br": relays, not the real address.
        masked = email.lower().endswith(MASKED_EMAIL_DOMAIN)
        if email:
            identifiers["email"] = [email]
        if profile.get("phone"):
            identifiers["phone"] = [profile["phone"]]
        document, doc_type = profile.get("document"), (profile.get("documentType") or "").lower()
        if document and doc_type == "cpf":
            identifiers["cpf"] = [str(document)]
        if profile.get("isCorporate") and profile.get("corporateDocument"):
            identifiers["cnpj"] = [str(profile["corporateDocument"])]
        if profile.get("userProfileId"):
            identifiers["custom"] = {"vtex_profile": {"value": str(profile["userProfileId"]), "match": "exact"}}
        traits = {
            "first_name": profile.get("firstName"),
            "last_name": profile.get("lastName"),
            "street": address.get("street"),
            "street_number": address.get("number"),
            "complement": address.get("complement"),
            "neighborhood": address.get("neighborhood"),
            "postal_code": address.get("postalCode"),
            "city": address.get("city"),
            "state": address.get("state"),
            "country": "BR" if address.get("country") in ("BRA", "BR") else address.get("country"),
        }
        traits = {k: str(v).strip() for k, v in traits.items() if v not in (None, "")}
        created = order.get("creationDate")
        items = [{
            "id": str(item.get("id")),
            "name": item.get("name"),
            "quantity": item.get("quantity"),
            "price": str(_reais(item.get("sellingPrice", item.get("price")))),
        } for item in order.get("items") or [] if isinstance(item, dict)]
        attributes = {"status": order.get("status"), "items": items}
        if order.get("salesChannel") is not None:
            attributes["sales_channel"] = str(order["salesChannel"])
        if isinstance(order.get("marketplace"), dict) and order["marketplace"].get("name"):
            attributes["marketplace"] = order["marketplace"]["name"]
        if masked:
            attributes["email_masked"] = True
        event = {"type": "purchase", "occurred_at": created, "id": order["orderId"],
                 "currency": ((order.get("storePreferencesData") or {}).get("currencyCode") or "BRL"),
                 "attributes": attributes}
        if isinstance(order.get("value"), (int, float)):
            event["amount"] = str(_reais(order["value"]))
        record = {"external_id": order["orderId"], "events": [event]}
        if order.get("lastChange") or created:
            record["observed_at"] = order.get("lastChange") or created
        if identifiers:
            record["identifiers"] = identifiers
        if traits:
            record["traits"] = traits
        return record


class _Cursor:
    """Where the next read starts: the last order date read, and the orders
    already read at exactly that date (the date filter is inclusive)."""

    def __init__(self, since: datetime, seen: list[str]):
        self.since, self.seen = since, list(seen)

    @classmethod
    def load(cls, cursor: Any, start: datetime | None) -> "_Cursor":
        if isinstance(cursor, dict) and parse_date(cursor.get("since")):
            return cls(parse_date(cursor["since"]), [str(s) for s in cursor.get("seen") or []])
        return cls(start or datetime(2000, 1, 1, tzinfo=timezone.utc), [])

    def already_read(self, order_id: str, when: datetime) -> bool:
        return when < self.since or (when == self.since and order_id in self.seen)

    def advance(self, order_id: str, when: datetime) -> None:
        if when > self.since:
            self.since, self.seen = when, [order_id]
        elif order_id not in self.seen:
            self.seen.append(order_id)

    def dump(self) -> dict:
        return {"since": self.since.isoformat(), "seen": list(self.seen)}


def _vtex_date(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _last_page(body: Any) -> int | None:
    paging = body.get("paging") if isinstance(body, dict) else None
    pages = paging.get("pages") if isinstance(paging, dict) else None
    return pages if isinstance(pages, int) else None


def _reais(cents: Any) -> Decimal:
    return (Decimal(str(cents or 0)) / 100).quantize(Decimal("0.01"))


@hookimpl
def cdp_source_types():
    return [VtexOrders]
