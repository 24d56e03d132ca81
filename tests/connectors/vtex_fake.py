"""A VTEX OMS stand-in for tests: the list endpoint filters by date range,
orders by date and pages like VTEX (at most 30 pages per query); details
are the recorded orders in tests/fixtures/vtex."""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from cdp.testing import FixtureServer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vtex"
AUTH = json.loads((FIXTURES / "routes.json").read_text())["auth"]["headers"]
APP_KEY, APP_TOKEN = AUTH["X-VTEX-API-AppKey"], AUTH["X-VTEX-API-AppToken"]
WEBHOOK_TOKEN = "hook-token-5d1c7e9a2b4f6a8c"
LIST = "/api/oms/pvt/orders"
RANGE = re.compile(r"^(\w+):\[(\S+) TO (\S+)\]$")


def recorded_orders() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(FIXTURES.glob("order_*.json"))]


def vtex_config(base_url: str, **overrides) -> dict:
    config = {"account": "lojaexemplo", "base_url": base_url, "app_key": APP_KEY, "app_token": APP_TOKEN,
              "per_page": 3, "start_date": "2026-01-01T00:00:00Z", "webhook_token": WEBHOOK_TOKEN}
    config.update(overrides)
    return config


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


class VtexFake:
    """The OMS list and detail endpoints over a set of order details."""

    def __init__(self, server: FixtureServer, orders: list[dict] | None = None):
        self.server = server
        self.orders: list[dict] = []
        server.require(headers=AUTH)
        server.add(LIST, handler=self._list)
        for order in orders if orders is not None else recorded_orders():
            self.add(order)

    def add(self, order: dict) -> dict:
        self.orders.append(order)
        self.server.add(f"{LIST}/{order['orderId']}", json=order)
        return order

    def new_order(self, order_id: str, created: str, template: int = 0) -> dict:
        order = copy.deepcopy(recorded_orders()[template])
        order.update(orderId=order_id, creationDate=created, authorizedDate=created, lastChange=created)
        return self.add(order)

    def _list(self, request):
        flt = next(((k, v) for k, v in request.args.items() if k.startswith("f_") and k != "f_status"), None)
        rows = list(self.orders)
        if flt:
            match = RANGE.match(flt[1])
            if not match or match.group(1) != flt[0][2:]:
                return 400, {"error": f"bad filter {flt[0]}"}
            field, low, high = match.group(1), _date(match.group(2)), _date(match.group(3))
            # VTEX compares at millisecond precision.
            rows = [o for o in rows if low <= _date(o[field]).replace(microsecond=_date(o[field]).microsecond // 1000 * 1000) <= high]
            rows.sort(key=lambda o: _date(o[field]))
        if request.args.get("f_status"):
            wanted = set(request.args["f_status"].split(","))
            rows = [o for o in rows if o["status"] in wanted]
        page, per_page = int(request.args.get("page", 1)), int(request.args.get("per_page", 15))
        if page > 30:
            return 400, {"error": {"code": "1", "message": "Max page exceed (30)"}}
        pages = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        return 200, {"list": [{"orderId": o["orderId"], "creationDate": o["creationDate"],
                               "authorizedDate": o["authorizedDate"], "status": o["status"],
                               "totalValue": o["value"], "currencyCode": "BRL"} for o in chunk],
                     "facets": [], "paging": {"total": len(rows), "pages": pages, "currentPage": page,
                                              "perPage": per_page}}

    def list_requests(self):
        return self.server.hits(LIST)
