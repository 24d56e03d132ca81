"""The demo's sources as a real Brazilian company has them, served by the
first-party connectors' own APIs on 127.0.0.1.

The generator (:mod:`cdp.demo.dataset`) writes its records in the common
record model; here each record is *rendered* into the payload shape of the
system it would really come from, and each system is played by a
:class:`cdp.testing.FixtureServer` (in memory, a thread, an ephemeral port):

* ``erp_clientes``: the TOTVS Protheus SA1 CSV export (file connector);
* ``loja_virtual`` orders, split by customer account across three channels:
  the main store on VTEX (OMS API), an outlet on Nuvemshop (orders and
  customers, with the e-mail marketing opt-in) and phone sales keyed in the
  Bling ERP (contatos and pedidos de venda, OAuth 2 with token refresh);
* ``reclame_aqui``: complaints through the Reclame Aqui API;
* ``formularios``: the newsletter box is a plain HTML form posted to
  ``/forms/<source>``; the other forms are RD Station landing pages whose
  conversions (with LGPD legal bases) RD Station posts as webhooks;
* ``pesquisa_nps``: the NPS/CSAT/CES survey is a Typeform, posted signed.

Pulled sources are configured like ``cdp sources add`` does and read with
``sources.sync_source`` (pagination, cursors); webhook sources receive real
HTTP POSTs on the app's own endpoints. The renderer is generic: it maps a
record's identifiers, traits, events and consents, never a particular record.
The ground truth follows each record to the (source, external id) its
connector gives it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlencode

from werkzeug.wrappers import Request, Response

from cdp.testing.server import FixtureServer
from plugins._common import parse_date

UTC = timezone.utc
# Generated status (pt-BR) -> each platform's own vocabulary.
VTEX_STATUS = {"entregue": "invoiced", "enviado": "invoiced", "pago": "ready-for-handling",
               "cancelado": "canceled", "devolvido": "canceled"}
NUVEMSHOP_STATUS = {"entregue": ("closed", "paid", "fulfilled"), "enviado": ("open", "paid", "shipped"),
                    "pago": ("open", "paid", "unpacked"), "cancelado": ("cancelled", "voided", "unpacked"),
                    "devolvido": ("cancelled", "refunded", "fulfilled")}
BLING_STATUS = {"entregue": (9, 1), "enviado": (15, 3), "pago": (6, 0), "cancelado": (12, 2), "devolvido": (12, 2)}
RECLAME_STATUS = {"resolvida": "Resolvida", "respondida": "Respondida", "nao_respondida": "Não respondida"}
RD_CATEGORY = {"email_marketing": "communications"}  # cdp purpose -> RD Station legal-base category
SCORES = ("nps", "csat", "ces")
CHANNELS = (("vtex", 5), ("nuvemshop", 3), ("bling", 2))  # share of store accounts per sales channel


@dataclass
class PulledSource:
    name: str
    type: str
    config: dict
    records: int  # records its sync should yield


@dataclass
class Delivery:
    source: str
    path: str
    body: bytes
    headers: dict
    entity: str


@dataclass
class DemoSources:
    """Everything the demo feeds cdp with, rendered and ready to serve."""

    pulled: list[PulledSource] = field(default_factory=list)
    webhook_sources: list[tuple[str, str, dict]] = field(default_factory=list)  # (name, type, config)
    deliveries: list[Delivery] = field(default_factory=list)
    truth: dict[tuple[str, str], str] = field(default_factory=dict)
    servers: list[FixtureServer] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.pulled) + len(self.deliveries)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for pulled in self.pulled:
            bind = pulled.config.pop("_server", None)
            if bind is not None:
                pulled.config.update(bind(self.servers))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


# -- reading what the generator wrote -------------------------------------------------------


def _generated(dataset) -> Iterable[dict]:
    from plugins.file_source import FileSource

    for data_path, mapping_path in dataset.files:
        config = {"path": str(data_path)}
        if mapping_path:
            config["mapping"] = str(mapping_path)
        for batch in FileSource(config).read():
            yield from batch.records


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _when(value: str) -> datetime:
    return parse_date(value).astimezone(UTC)


def _cents(amount: Any) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value())


def _digits(text: Any) -> str:
    return re.sub(r"\D", "", str(text or ""))


def _stable(seed: int, *parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()[:8], "big")


def _name(traits: dict) -> str:
    return traits.get("full_name") or " ".join(t for t in (traits.get("first_name"), traits.get("last_name")) if t)


# -- the renderer -------------------------------------------------------------------------


class _Renderer:
    def __init__(self, seed: int):
        self.seed = seed
        self.ids: dict[tuple[str, str], int] = {}
        self.issued: dict[str, int] = {}
        self.vtex_orders: list[dict] = []
        self.nuvem_orders: list[dict] = []
        self.nuvem_customers: dict[str, dict] = {}
        self.bling_contatos: dict[str, dict] = {}
        self.bling_pedidos: list[dict] = []
        self.complaints: list[dict] = []
        self.truth: dict[tuple[str, str], str] = {}

    def number(self, kind: str, key: str, start: int) -> int:
        """A platform-style numeric id, sequential per kind in first-seen order."""
        if (kind, key) not in self.ids:
            self.ids[(kind, key)] = start + self.issued.get(kind, 0)
            self.issued[kind] = self.issued.get(kind, 0) + 1
        return self.ids[(kind, key)]

    def channel(self, account: str) -> str:
        total = sum(w for _, w in CHANNELS)
        roll = _stable(self.seed, "channel", account) % total
        for name, weight in CHANNELS:
            if roll < weight:
                return name
            roll -= weight
        raise AssertionError("unreachable")

    # -- store orders --
    def order(self, record: dict, entity: str) -> None:
        ids, traits = record.get("identifiers") or {}, record.get("traits") or {}
        account = str((ids.get("custom") or {}).get("customer_number") or _first(ids.get("email")) or record["external_id"])
        {"vtex": self.vtex, "nuvemshop": self.nuvemshop, "bling": self.bling}[self.channel(account)](
            record, ids, traits, account, entity)

    def vtex(self, record, ids, traits, account, entity):
        event = record["events"][0]
        when = _when(event["occurred_at"])
        order_id = f"{1500000000000 + self.number('vtex', record['external_id'], 1):013d}-01"
        attrs = event.get("attributes") or {}
        document = _digits(ids.get("cpf"))
        self.vtex_orders.append({
            "orderId": order_id, "sequence": order_id[-9:-3], "status": VTEX_STATUS.get(attrs.get("status"), "invoiced"),
            "creationDate": when.isoformat(), "lastChange": when.isoformat(), "salesChannel": "1",
            "value": _cents(event.get("amount") or 0),
            "items": [{"id": item.get("sku"), "name": item.get("name"), "quantity": item.get("quantity"),
                       "sellingPrice": _cents(item.get("price") or 0)} for item in attrs.get("items") or []],
            "clientProfileData": {
                "email": _first(ids.get("email")), "firstName": traits.get("first_name"),
                "lastName": traits.get("last_name"), "document": document or None,
                "documentType": "cpf" if document else None, "phone": _first(ids.get("phone")),
                "isCorporate": False, "userProfileId": str(uuid.UUID(int=_stable(self.seed, "vtex", account) << 64)),
            },
            "shippingData": {"address": {
                "street": traits.get("street"), "number": traits.get("street_number"),
                "complement": traits.get("complement"), "neighborhood": traits.get("neighborhood"),
                "postalCode": traits.get("postal_code"), "city": traits.get("city"), "state": traits.get("state"),
                "country": "BRA"}},
            "storePreferencesData": {"currencyCode": event.get("currency") or "BRL"},
        })
        self.truth[("loja_vtex", order_id)] = entity

    def nuvemshop(self, record, ids, traits, account, entity):
        event = record["events"][0]
        when = _when(event["occurred_at"])
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S+0000")
        customer_id = self.number("nuvem_customer", account, 120000001)
        order_id = self.number("nuvem_order", record["external_id"], 900000001)
        attrs = event.get("attributes") or {}
        status, payment, shipping = NUVEMSHOP_STATUS.get(attrs.get("status"), ("closed", "paid", "fulfilled"))
        name = _name(traits)
        customer = {"id": customer_id, "name": name, "email": _first(ids.get("email")),
                    "identification": ids.get("cpf"), "phone": _first(ids.get("phone"))}
        address = {"billing_address": traits.get("street"), "billing_number": traits.get("street_number"),
                   "billing_floor": traits.get("complement"), "billing_locality": traits.get("neighborhood"),
                   "billing_zipcode": traits.get("postal_code"), "billing_city": traits.get("city"),
                   "billing_province": traits.get("state"), "billing_country": "BR"}
        self.nuvem_orders.append({
            "id": order_id, "number": order_id - 900000000, "created_at": stamp, "updated_at": stamp,
            "contact_name": name, "contact_email": customer["email"], "contact_phone": customer["phone"],
            "contact_identification": ids.get("cpf"), "customer": customer, **address,
            "shipping_address": {"city": traits.get("city"), "province": traits.get("state")},
            "products": [{"id": n + 1, "product_id": _stable(self.seed, "product", str(item.get("sku"))) % 10**8,
                          "variant_id": None, "name": item.get("name"), "sku": item.get("sku"),
                          "quantity": item.get("quantity"), "price": item.get("price")}
                         for n, item in enumerate(attrs.get("items") or [])],
            "total": event.get("amount"), "currency": event.get("currency") or "BRL", "status": status,
            "payment_status": payment, "shipping_status": shipping, "gateway": "pagseguro",
        })
        self.truth[("loja_nuvemshop", f"order:{order_id}")] = entity
        # The customer as the store keeps it: the latest details, and the opt-in ticked at any checkout.
        opted = [c for c in record.get("consents") or [] if c.get("purpose") == "email_marketing"]
        known = self.nuvem_customers.get(account)
        row = {**customer, "default_address": {
            "address": traits.get("street"), "number": traits.get("street_number"), "floor": traits.get("complement"),
            "locality": traits.get("neighborhood"), "zipcode": traits.get("postal_code"), "city": traits.get("city"),
            "province": traits.get("state"), "country": "BR"},
            "created_at": known["created_at"] if known else stamp, "updated_at": stamp,
            "accepts_marketing": bool(opted) or bool(known and known["accepts_marketing"]),
            "accepts_marketing_updated_at": stamp if opted else (known or {}).get("accepts_marketing_updated_at")}
        self.nuvem_customers[account] = row
        self.truth[("loja_nuvemshop", f"customer:{customer_id}")] = entity

    def bling(self, record, ids, traits, account, entity):
        event = record["events"][0]
        when = _when(event["occurred_at"])
        contato_id = self.number("bling_contato", account, 16000000001)
        pedido_id = self.number("bling_pedido", record["external_id"], 21000000001)
        name = _name(traits)
        phone = _first(ids.get("phone"))
        contato = self.bling_contatos.get(account)
        self.bling_contatos[account] = {
            "id": contato_id, "nome": name, "codigo": account, "situacao": "A",
            "numeroDocumento": ids.get("cpf"), "telefone": "", "celular": phone, "tipo": "F",
            "email": _first(ids.get("email")), "_changed": when,
            "endereco": {"geral": {"endereco": traits.get("street"), "numero": traits.get("street_number"),
                                   "complemento": traits.get("complement"), "bairro": traits.get("neighborhood"),
                                   "cep": traits.get("postal_code"), "municipio": traits.get("city"),
                                   "uf": traits.get("state")}},
            "dadosAdicionais": {"dataNascimento": traits.get("birth_date") or "0000-00-00", "sexo": ""},
        } if contato is None or contato["_changed"] < when else contato
        situacao, _ = BLING_STATUS.get((event.get("attributes") or {}).get("status"), (9, 1))
        self.bling_pedidos.append({
            "id": pedido_id, "numero": pedido_id - 21000000000, "numeroLoja": "",
            "data": when.astimezone(timezone(timedelta(hours=-3))).date().isoformat(), "_changed": when,
            "total": float(event.get("amount") or 0), "loja": {"id": 0},
            "contato": {"id": contato_id, "nome": name, "tipoPessoa": "F", "numeroDocumento": ids.get("cpf")},
            "situacao": {"id": situacao, "valor": 0},
        })
        self.truth[("erp_bling", f"contato:{contato_id}")] = entity
        self.truth[("erp_bling", f"pedido:{pedido_id}")] = entity

    # -- complaints --
    def complaint(self, record: dict, entity: str) -> None:
        event = record["events"][0]
        attrs = event.get("attributes") or {}
        ids, traits = record.get("identifiers") or {}, record.get("traits") or {}
        created = _when(event["occurred_at"])
        rated = attrs.get("rating") is not None or attrs.get("would_do_business_again") is not None
        updated = created + timedelta(hours=_stable(self.seed, "ra", record["external_id"]) % 240 + 1)
        self.complaints.append({
            "id": record["external_id"], "title": attrs.get("title"), "description": None,
            "status": RECLAME_STATUS.get(attrs.get("status"), "Não respondida"),
            "created_at": created.isoformat(), "updated_at": updated.isoformat(),
            "city": traits.get("city"), "state": traits.get("state"),
            "consumer": {"name": _name(traits), "email": _first(ids.get("email")), "phone": _first(ids.get("phone"))},
            "evaluation": {"score": attrs.get("rating"), "would_do_business_again": attrs.get("would_do_business_again"),
                           "resolved": attrs.get("status") == "resolvida", "evaluated_at": updated.isoformat()}
            if rated else None,
        })
        self.truth[("reclame_aqui", f"complaint:{record['external_id']}")] = entity


# -- webhooks as their senders post them ------------------------------------------------------


def rd_station_lead(record: dict, seed: int) -> dict:
    ids, traits = record.get("identifiers") or {}, record.get("traits") or {}
    event = record["events"][0]
    email = _first(ids.get("email"))
    lead_uuid = str(uuid.UUID(int=_stable(seed, "rd", (email or "").strip().lower()) << 64 | 0x4000_8000_0000_0000))
    converted = {"content": {"identificador": (event.get("attributes") or {}).get("form")},
                 "created_at": _when(event["occurred_at"]).isoformat(),
                 "conversion_origin": {"source": "google", "medium": "organic", "campaign": None}}
    legal_bases = [{"category": RD_CATEGORY.get(c["purpose"], c["purpose"]), "type": c.get("legal_basis", "consent"),
                    "status": "granted" if c.get("status") == "granted" else "declined"}
                   for c in record.get("consents") or []]
    return {"id": _stable(seed, "rd-id", lead_uuid) % 10**9, "uuid": lead_uuid, "email": email, "name": _name(traits),
            "mobile_phone": _first(ids.get("phone")), "personal_phone": None, "city": traits.get("city"),
            "state": traits.get("state"), "tags": [], "lead_stage": "Lead", "number_conversions": 1,
            "first_conversion": converted, "last_conversion": converted, "legal_bases": legal_bases}


TYPEFORM_FIELDS = [
    {"id": "Fm1eMail", "ref": "email", "type": "email", "title": "Seu e-mail"},
    {"id": "Fm2Nps00", "ref": "nps", "type": "nps",
     "title": "De 0 a 10, quanto você recomendaria a loja a um amigo?"},
    {"id": "Fm3Csat0", "ref": "csat", "type": "opinion_scale", "title": "Qual a sua satisfação com a compra? (1 a 5)"},
    {"id": "Fm4Ces00", "ref": "ces", "type": "opinion_scale", "title": "Foi fácil comprar conosco? (1 a 5)"},
    {"id": "Fm5Text0", "ref": "comentario", "type": "long_text", "title": "Quer contar mais?"},
]


def typeform_response(record: dict, seed: int) -> dict:
    ids = record.get("identifiers") or {}
    event = record["events"][0]
    attrs = event.get("attributes") or {}
    submitted = _when(event["occurred_at"])
    by_ref = {f["ref"]: f for f in TYPEFORM_FIELDS}
    answers = []
    if _first(ids.get("email")):
        answers.append({"type": "email", "email": _first(ids.get("email")), "field": _field(by_ref["email"])})
    for scale in SCORES:
        if str(attrs.get(scale) or "").strip().isdigit():
            answers.append({"type": "number", "number": int(attrs[scale]), "field": _field(by_ref[scale])})
    if attrs.get("comment"):
        answers.append({"type": "text", "text": attrs["comment"], "field": _field(by_ref["comentario"])})
    token = hashlib.sha256(f"{seed}|typeform|{record['external_id']}".encode()).hexdigest()[:32]
    return {"event_id": token[:26].upper(), "event_type": "form_response", "form_response": {
        "form_id": "Pq7NpsLj", "token": token, "landed_at": (submitted - timedelta(seconds=95)).isoformat(),
        "submitted_at": submitted.isoformat(), "hidden": {},
        "definition": {"id": "Pq7NpsLj", "title": "Pesquisa de satisfação", "fields": TYPEFORM_FIELDS},
        "answers": answers}}


def _field(spec: dict) -> dict:
    return {"id": spec["id"], "ref": spec["ref"], "type": spec["type"]}


HTML_FORM_FIELDS = {"email": "email", "celular": "phone", "nome": "full_name", "primeiro_nome": "first_name",
                    "aceito_news": "consent:email_marketing", "aceito_personalizacao": "consent:personalization"}


def html_form_body(record: dict) -> bytes:
    ids, traits = record.get("identifiers") or {}, record.get("traits") or {}
    purposes = {c["purpose"] for c in record.get("consents") or [] if c.get("status") == "granted"}
    form = {"email": _first(ids.get("email")) or "", "celular": _first(ids.get("phone")) or "",
            "nome": traits.get("full_name") or "", "primeiro_nome": traits.get("first_name") or "",
            "website": ""}
    form.update({field: "on" for field, target in HTML_FORM_FIELDS.items()
                 if target.startswith("consent:") and target.split(":", 1)[1] in purposes})
    return urlencode(form).encode()


# -- the fake remote APIs ------------------------------------------------------------------------


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, content_type="application/json")


def _vtex_api(orders: list[dict]) -> Callable[[Request], Response]:
    ordered = sorted(orders, key=lambda o: (o["creationDate"], o["orderId"]))
    window = re.compile(r"^creationDate:\[(\S+) TO (\S+)\]$")

    def listing(request: Request) -> Response:
        match = window.match(request.args.get("f_creationDate", "creationDate:[* TO *]"))
        low, high = (_when(match.group(1)), _when(match.group(2))) if match else (None, None)
        rows = [o for o in ordered if low is None or low <= _when(o["creationDate"]) <= high]
        page, per_page = int(request.args.get("page", 1)), int(request.args.get("per_page", 15))
        chunk = rows[(page - 1) * per_page: page * per_page]
        summaries = [{"orderId": o["orderId"], "creationDate": o["creationDate"], "status": o["status"],
                      "totalValue": o["value"]} for o in chunk]
        pages = max(1, -(-len(rows) // per_page))
        return _json(200, {"list": summaries, "paging": {"total": len(rows), "pages": pages, "currentPage": page,
                                                         "perPage": per_page}})
    return listing


def _nuvemshop_api(rows: list[dict]) -> Callable[[Request], Response]:
    ordered = sorted(rows, key=lambda r: (r["updated_at"], r["id"]))

    def listing(request: Request) -> Response:
        since = parse_date(request.args.get("updated_at_min"))
        selected = [r for r in ordered if since is None or parse_date(r["updated_at"]) >= since]
        page, per_page = int(request.args.get("page", 1)), int(request.args.get("per_page", 30))
        chunk = selected[(page - 1) * per_page: page * per_page]
        if not chunk and page > 1:
            return _json(404, {"code": 404, "message": "Not Found",
                               "description": f"Last page is {max(1, -(-len(selected) // per_page))}"})
        return _json(200, chunk)
    return listing


def _bling_api(rows: list[dict], brief: tuple[str, ...] | None) -> Callable[[Request], Response]:
    ordered = sorted(rows, key=lambda r: r["id"])

    def listing(request: Request) -> Response:
        since = request.args.get("dataAlteracaoInicial")
        cut = parse_date(since, default_tz=timezone(timedelta(hours=-3))) if since else None
        selected = [r for r in ordered if cut is None or r["_changed"] >= cut]
        page, size = int(request.args.get("pagina", 1)), int(request.args.get("limite", 100))
        chunk = selected[(page - 1) * size: page * size]
        return _json(200, {"data": [{k: v for k, v in r.items() if (brief is None or k in brief) and k != "_changed"}
                                    for r in chunk]})
    return listing


class BlingOAuth:
    """Bling's token endpoint and bearer check: access tokens expire, and each
    refresh rotates the refresh token (the previous one stops working)."""

    def __init__(self, client_id: str, client_secret: str):
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = secrets.token_urlsafe(24)
        self.access_token = secrets.token_urlsafe(24)
        self.refreshes = 0

    def expire(self) -> None:
        self.access_token = secrets.token_urlsafe(24)  # whatever the client holds is now stale

    def authorized(self, request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.access_token}")

    def token(self, request: Request) -> Response:
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != (self.client_id, self.client_secret):
            return _json(401, {"error": {"type": "invalid_client", "message": "invalid_client"}})
        form = parse_qs(request.get_data(as_text=True))
        if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [self.refresh_token]:
            return _json(400, {"error": {"type": "invalid_grant", "message": "invalid_grant",
                                         "description": "Invalid refresh token"}})
        self.refresh_token, self.access_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.refreshes += 1
        return _json(200, {"access_token": self.access_token, "expires_in": 21600, "token_type": "Bearer",
                           "scope": "98309 318257570", "refresh_token": self.refresh_token})

    def guard(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            if not self.authorized(request):
                return _json(401, {"error": {"type": "invalid_token", "message": "invalid_token",
                                             "description": "The access token provided has expired"}})
            return handler(request)
        return guarded


def _reclame_api(rows: list[dict]) -> Callable[[Request], Response]:
    ordered = sorted(rows, key=lambda r: (r["updated_at"], r["id"]))

    def listing(request: Request) -> Response:
        since = parse_date(request.args.get("updated_since"))
        selected = [r for r in ordered if since is None or parse_date(r["updated_at"]) >= since]
        page, per_page = int(request.args.get("page", 1)), int(request.args.get("per_page", 50))
        chunk = selected[(page - 1) * per_page: page * per_page]
        return _json(200, {"data": chunk, "meta": {"page": page, "per_page": per_page, "total": len(selected),
                                                   "total_pages": max(1, -(-len(selected) // per_page))}})
    return listing


# -- putting it together ------------------------------------------------------------------------------


def render(dataset, seed: int) -> DemoSources:
    """Render the generated records into each source's payloads (in memory:
    the personal data never reaches disk on this side)."""
    from identity.evaluate import read_truth

    generated_truth = read_truth(dataset.truth_path)
    r = _Renderer(seed)
    out = DemoSources()
    rd_token, typeform_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    forms, surveys = [], []
    erp = 0
    for record in _generated(dataset):
        entity = generated_truth[(record["source"], record["external_id"])]
        kind = record["source"]
        if kind == "erp_clientes":
            erp += 1
            out.truth[(kind, record["external_id"])] = entity
        elif kind == "loja_virtual":
            r.order(record, entity)
        elif kind == "reclame_aqui":
            r.complaint(record, entity)
        elif kind == "formularios":
            forms.append((record, entity))
        elif kind == "pesquisa_nps":
            surveys.append((record, entity))
        else:
            raise ValueError(f"demo: no connector renders source {kind}")
    out.truth.update(r.truth)

    # The ERP export stays a file: the file connector reads it as `cdp sources add --type file` would.
    erp_data, erp_mapping = next((d, m) for d, m in dataset.files if d.name.startswith("erp_clientes"))
    out.pulled.append(PulledSource("erp_clientes", "file", {"path": str(erp_data), "mapping": str(erp_mapping)}, erp))

    app_key, app_token = "vtexappkey-lojademo-" + secrets.token_hex(4).upper(), secrets.token_urlsafe(32)
    vtex = FixtureServer()
    vtex.require(headers={"X-VTEX-API-AppKey": app_key, "X-VTEX-API-AppToken": app_token})
    vtex.add("/api/oms/pvt/orders", handler=_vtex_api(r.vtex_orders))
    for order in r.vtex_orders:
        vtex.add(f"/api/oms/pvt/orders/{order['orderId']}", json=order)

    nuvem_token, store_id = secrets.token_hex(20), "3141592"
    nuvem = FixtureServer()
    nuvem.require(headers={"Authentication": f"bearer {nuvem_token}"})
    customers = list(r.nuvem_customers.values())
    nuvem.add(f"/v1/{store_id}/orders", handler=_nuvemshop_api(r.nuvem_orders))
    nuvem.add(f"/v1/{store_id}/customers", handler=_nuvemshop_api(customers))

    oauth = BlingOAuth("demo-" + secrets.token_hex(8), secrets.token_urlsafe(24))
    bling = FixtureServer()
    contatos = list(r.bling_contatos.values())
    bling.add("/Api/v3/oauth/token", method="POST", handler=oauth.token)
    bling.add("/Api/v3/contatos", handler=oauth.guard(_bling_api(
        contatos, ("id", "nome", "codigo", "situacao", "numeroDocumento", "telefone", "celular"))))
    bling.add("/Api/v3/pedidos/vendas", handler=oauth.guard(_bling_api(r.bling_pedidos, None)))
    for contato in contatos:
        detail = {k: v for k, v in contato.items() if k != "_changed"}
        bling.add(f"/Api/v3/contatos/{contato['id']}", handler=oauth.guard(lambda _req, d=detail: (200, {"data": d})))
    stale = oauth.access_token
    oauth.expire()  # the token the operator pasted has since expired: the first call refreshes

    ra_token, company = secrets.token_urlsafe(32), "loja-demo-ltda"
    reclame = FixtureServer()
    reclame.require(headers={"Authorization": f"Bearer {ra_token}"})
    reclame.add(f"/v1/companies/{company}/complaints", handler=_reclame_api(r.complaints))

    out.servers = [vtex, nuvem, bling, reclame]
    start = "2020-01-01T00:00:00+00:00"
    out.pulled += [
        PulledSource("loja_vtex", "vtex", {
            "account": "lojademo", "app_key": app_key, "app_token": app_token, "start_date": start,
            "_server": lambda servers: {"base_url": servers[0].url}}, len(r.vtex_orders)),
        PulledSource("loja_nuvemshop", "nuvemshop", {
            "store_id": store_id, "access_token": nuvem_token, "user_agent": "CDP demo (ti@lojademo.com.br)",
            "start_date": start, "_server": lambda servers: {"base_url": servers[1].url + "/v1"}},
            len(r.nuvem_orders) + len(customers)),
        PulledSource("erp_bling", "bling", {
            "client_id": oauth.client_id, "client_secret": oauth.client_secret, "refresh_token": oauth.refresh_token,
            "access_token": stale, "start_date": start,
            "_server": lambda servers: {"base_url": servers[2].url + "/Api/v3",
                                        "oauth_url": servers[2].url + "/Api/v3/oauth/token"}},
            len(contatos) + len(r.bling_pedidos)),
        PulledSource("reclame_aqui", "reclame_aqui", {
            "company_id": company, "api_token": ra_token, "start_date": start,
            "_server": lambda servers: {"base_url": servers[3].url}}, len(r.complaints)),
    ]

    # Webhooks: RD Station landing pages and the site's newsletter box; the Typeform survey.
    out.webhook_sources = [
        ("rd_station", "rd_station", {"webhook_token": rd_token,
                                      "purposes": {"communications": "email_marketing"}}),
        ("newsletter_site", "html_form", {"fields": HTML_FORM_FIELDS, "event_type": "form_submission"}),
        ("pesquisa_nps", "typeform", {"webhook_secret": typeform_secret, "scores": {"csat": "csat", "ces": "ces"}}),
    ]
    for record, entity in forms:
        if (record["events"][0].get("attributes") or {}).get("form") == "newsletter":
            out.deliveries.append(Delivery("newsletter_site", "/forms/newsletter_site", html_form_body(record),
                                           {"Content-Type": "application/x-www-form-urlencoded"}, entity))
        else:
            body = json.dumps({"leads": [rd_station_lead(record, seed)]}, ensure_ascii=False).encode()
            out.deliveries.append(Delivery("rd_station", "/api/v1/webhooks/rd_station", body,
                                           {"Content-Type": "application/json", "X-CDP-Webhook-Token": rd_token},
                                           entity))
    for record, entity in surveys:
        body = json.dumps(typeform_response(record, seed), ensure_ascii=False).encode()
        signature = "sha256=" + base64.b64encode(hmac.new(typeform_secret.encode(), body, "sha256").digest()).decode()
        out.deliveries.append(Delivery("pesquisa_nps", "/api/v1/webhooks/pesquisa_nps", body,
                                       {"Content-Type": "application/json", "Typeform-Signature": signature}, entity))
    return out


def expected_external_ids(delivery: Delivery, connector) -> list[str]:
    """The external ids the receiving connector gives a delivery (for the truth):
    the same mapping the endpoint ran, on the same body. (An HTML form's id
    includes the day it arrived: posted and followed in the same moment.)"""
    from cdp.connectors import WebhookError

    try:
        return [rec["external_id"] for rec in connector.handle_webhook(delivery.body, delivery.headers)]
    except WebhookError:  # refused (a form without a contact): nothing was stored
        return []
