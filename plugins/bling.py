"""Bling ERP (API v3): contacts (contatos) as records with identifiers, and
sales orders (pedidos de venda) as records with a `purchase` event.

API (https://developer.bling.com.br, base ``https://api.bling.com.br/Api/v3``):
* OAuth 2 bearer token: ``Authorization: Bearer <access_token>``.
* ``GET /contatos`` and ``GET /pedidos/vendas``: ``pagina``/``limite`` (at
  most 100), ``dataAlteracaoInicial`` ("YYYY-MM-DD HH:MM:SS", Brasília time)
  for incremental reads; the answer is ``{"data": [...]}`` and an empty or
  short page is the last one.
* The contact list carries only ``id, nome, codigo, situacao,
  numeroDocumento, telefone, celular``; the rest (``email``, ``tipo`` F/J,
  ``endereco.geral``, ``dadosAdicionais``) comes from ``GET /contatos/{id}``
  (``{"data": {...}}``), read for each listed contact.
* A sales order in the list has ``id, numero, data, total, contato {id, nome,
  tipoPessoa, numeroDocumento}, situacao {id, valor}``: enough for a purchase
  event linked to the contact by its document and Bling contact id.
* The list rows carry no change time, so the cursor (a :class:`PassCursor`)
  restarts from the moment the previous pass began; a contact changed during
  a pass is read again next time and stored as a duplicate (content hash).

* Auth: OAuth 2 (authorization code). Access tokens expire after about 6
  hours; with ``client_id``, ``client_secret`` and ``refresh_token`` the
  connector renews them itself (``POST https://www.bling.com.br/Api/v3/oauth/token``,
  ``grant_type=refresh_token``, HTTP Basic ``client_id:client_secret``):
  before the first call when ``expires_at`` has passed (or there is no
  ``access_token``), and on an HTTP 401, after which the request is sent once
  more. Bling rotates the refresh token on every refresh and the previous one
  stops working, so the new pair is stored in the source's encrypted
  configuration (``save_config``) before anything else happens. A refused
  refresh token (``invalid_grant``) raises :class:`BlingReauthorize`: the
  operator authorizes the app again and sets the new ``refresh_token``.
  ``access_token`` alone (no refresh) still works until it expires.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator, Mapping
from zoneinfo import ZoneInfo

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from cdp.connectors import AuthError, Batch, ConnectorError, MalformedResponse, SourceConnector
from cdp.hookspecs import hookimpl
from plugins._common import PassCursor, compact, document_kind, parse_date

log = logging.getLogger(__name__)

BRASILIA = ZoneInfo("America/Sao_Paulo")
TOKEN_URL = "https://www.bling.com.br/Api/v3/oauth/token"
EARLY = timedelta(minutes=2)  # renew a little before expires_at: clocks and in-flight requests


class BlingReauthorize(AuthError):
    """Bling refused the refresh token (invalid_grant): only a new authorization fixes it."""
PATHS = {"contatos": "/contatos", "pedidos_vendas": "/pedidos/vendas"}


class BlingConfig(Schema):
    class Meta:
        unknown = RAISE

    access_token = fields.String(validate=validate.Length(min=8, max=500), metadata={"secret": True})
    client_id = fields.String(validate=validate.Length(min=1, max=200))
    client_secret = fields.String(validate=validate.Length(min=8, max=500), metadata={"secret": True})
    refresh_token = fields.String(validate=validate.Length(min=8, max=500), metadata={"secret": True})
    expires_at = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None, metadata={
        "description": "When access_token expires (kept up to date by the connector)."})
    oauth_url = fields.Url(require_tld=False, schemes={"http", "https"},
                           metadata={"description": f"Override {TOKEN_URL} (proxy, tests)."})
    base_url = fields.Url(require_tld=False, schemes={"http", "https"},
                          metadata={"description": "Override https://api.bling.com.br/Api/v3 (proxy, tests)."})
    limite = fields.Integer(load_default=100, validate=validate.Range(1, 100))
    start_date = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None)

    @validates_schema
    def _credentials(self, data, **kwargs):
        oauth = [k for k in ("client_id", "client_secret", "refresh_token") if data.get(k)]
        if oauth and len(oauth) < 3:
            missing = sorted({"client_id", "client_secret", "refresh_token"} - set(oauth))
            raise ValidationError("Needed to renew the access token.", field_name=missing[0])
        if not oauth and not data.get("access_token"):
            raise ValidationError("Set access_token, or client_id, client_secret and refresh_token.",
                                  field_name="access_token")


class Bling(SourceConnector):
    name = "bling"
    title = "Bling ERP (contatos, pedidos de venda)"
    config_schema = BlingConfig

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        self.renews = bool(self.config.get("refresh_token"))
        token = self.config.get("access_token")
        self.http = self.http_client(self.config.get("base_url") or "https://api.bling.com.br/Api/v3",
                                     headers={"Authorization": f"Bearer {token}"} if token else {},
                                     auth_hint="check access_token (Bling tokens expire after 6 hours)"
                                     if not self.renews else "check client_id/client_secret and the app's scopes",
                                     reauthorize=self.refresh if self.renews else None)

    # -- OAuth 2 --
    def _fresh(self) -> None:
        """Renew first when the access token is missing or (about to be) expired."""
        expires = self.config.get("expires_at")
        if self.renews and (not self.config.get("access_token") or
                            (expires is not None and expires - EARLY <= datetime.now(timezone.utc))):
            self.http.session.headers.update(self.refresh())

    def refresh(self) -> dict[str, str]:
        """Trade the refresh token for a new pair, store both (encrypted) before
        going on, and return the new Authorization header."""
        from cdp.http import HttpClient

        url = self.config.get("oauth_url") or TOKEN_URL
        client = HttpClient(self.name, url, auth=(self.config["client_id"], self.config["client_secret"]),
                            secrets=self.secret_values(), retry=self.http.retry)
        try:
            response = client.request("POST", url, data={"grant_type": "refresh_token",
                                                          "refresh_token": self.config["refresh_token"]},
                                      allow=(400, 401))
        finally:
            client.close()
        body = client.json_of(response) if response.content else {}
        error = body.get("error") if isinstance(body, dict) else None
        kind = (error.get("type") if isinstance(error, dict) else error) or ""
        if response.status_code == 400 and kind == "invalid_grant":
            log.warning("bling: source=%s refresh token refused (invalid_grant)", self.source)
            raise BlingReauthorize(
                f"bling: the refresh token was refused (invalid_grant): authorize the app in Bling again and store "
                f"the new refresh_token (cdp sources add {self.source} --update --config-file FILE)")
        if response.status_code in (400, 401):
            raise AuthError(f"bling: the token endpoint refused the request (HTTP {response.status_code}"
                            f"{', ' + kind if kind in ('invalid_client', 'invalid_request', 'unauthorized_client') else ''})"
                            ": check client_id and client_secret")
        access, rotated = (body.get("access_token"), body.get("refresh_token")) if isinstance(body, dict) else (None, None)
        if not isinstance(access, str) or not access or not isinstance(rotated, str) or not rotated:
            raise MalformedResponse("bling: the token endpoint answered without access_token and refresh_token")
        lifetime = body.get("expires_in") if isinstance(body.get("expires_in"), int) else 21600
        expires = (datetime.now(timezone.utc) + timedelta(seconds=lifetime)).replace(microsecond=0)
        # Bling has already retired the old refresh token: the new one is stored before anything else.
        self.save_config({"access_token": access, "refresh_token": rotated, "expires_at": expires.isoformat()})
        self.http.secrets = [*self.http.secrets, access, rotated]
        log.info("bling: source=%s access token renewed; rotated refresh token stored", self.source)
        return {"Authorization": f"Bearer {access}"}

    def check(self) -> None:
        self._fresh()
        self.http.items_of(self.http.get_json("/contatos", params={"pagina": 1, "limite": 1}), "data", "/contatos")

    def streams(self) -> list[str]:
        return list(PATHS)

    def read(self, stream: str = "contatos", cursor: Any = None, batch_size: int = 100) -> Iterator[Batch]:
        if stream not in PATHS:
            raise ConnectorError(f"bling: no stream {stream!r} (contatos, pedidos_vendas)")
        self._fresh()
        state = PassCursor.load(cursor, self.config["start_date"])
        params = {"dataAlteracaoInicial": bling_date(state.since)} if state.since else {}
        size = max(1, min(self.config["limite"], batch_size))
        for page in self.http.pages_by_number(PATHS[stream], items="data", params=params, page_param="pagina",
                                              size_param="limite", size=size, start=state.page):
            batch = Batch(records=[])
            for row in page.items:
                if not isinstance(row, dict) or "id" not in row:
                    raise MalformedResponse(f"bling: malformed {stream} page: an entry has no id")
                if stream == "pedidos_vendas":
                    if _day(row.get("data")) is None:  # a purchase needs its date
                        batch.errors.append((f"pedido {row['id']}", {"data": ["missing or not a date"]}))
                    else:
                        batch.records.append(self.map_pedido(row))
                    continue
                detail = self.contato(row["id"])
                if detail is None:
                    batch.errors.append((f"contato {row['id']}", {"id": ["not found (deleted?)"]}))
                else:
                    batch.records.append(self.map_contato(detail))
            batch.cursor = state.dump(page.next, by_row_time=False)
            yield batch

    def contato(self, contato_id: Any) -> dict | None:
        response = self.http.request("GET", f"/contatos/{contato_id}", allow=(404,))
        if response.status_code == 404:
            return None
        body = self.http.json_of(response)
        detail = body.get("data") if isinstance(body, dict) else None
        if not isinstance(detail, dict) or "id" not in detail:
            raise MalformedResponse("bling: malformed contato detail (no data.id)")
        return detail

    # -- mapping --
    def map_contato(self, contato: dict) -> dict:
        identifiers: dict = {}
        doc = document_kind(contato.get("numeroDocumento"))
        if doc:
            identifiers[doc[0]] = doc[1]
        email = (contato.get("email") or "").strip()
        if email:
            identifiers["email"] = email
        phones = [p.strip() for p in (contato.get("celular"), contato.get("telefone")) if isinstance(p, str) and p.strip()]
        if phones:
            identifiers["phone"] = phones
        identifiers["custom"] = {"bling_contato": str(contato["id"])}
        geral = ((contato.get("endereco") or {}).get("geral") or {}) if isinstance(contato.get("endereco"), dict) else {}
        extra = contato.get("dadosAdicionais") if isinstance(contato.get("dadosAdicionais"), dict) else {}
        birth = extra.get("dataNascimento")
        traits = compact({
            "full_name": contato.get("nome"),
            "birth_date": birth if birth and not str(birth).startswith("0000") else None,
            "gender": extra.get("sexo") if extra.get("sexo") in ("M", "F") else None,
            "street": geral.get("endereco"), "street_number": geral.get("numero"),
            "complement": geral.get("complemento"), "neighborhood": geral.get("bairro"),
            "postal_code": geral.get("cep"), "city": geral.get("municipio"), "state": geral.get("uf"),
        })
        record = {"external_id": f"contato:{contato['id']}", "identifiers": identifiers}
        if traits:
            record["traits"] = traits
        return record

    def map_pedido(self, pedido: dict) -> dict:
        contato = pedido.get("contato") if isinstance(pedido.get("contato"), dict) else {}
        identifiers: dict = {}
        doc = document_kind(contato.get("numeroDocumento"))
        if doc:
            identifiers[doc[0]] = doc[1]
        if contato.get("id"):
            identifiers["custom"] = {"bling_contato": str(contato["id"])}
        situacao = pedido.get("situacao") if isinstance(pedido.get("situacao"), dict) else {}
        event = {"type": "purchase", "id": str(pedido["id"]), "currency": "BRL",
                 "attributes": compact({"numero": pedido.get("numero"), "numero_loja": pedido.get("numeroLoja"),
                                        "situacao_id": situacao.get("id"),
                                        "loja_id": (pedido.get("loja") or {}).get("id") if isinstance(pedido.get("loja"), dict) else None})}
        when = _day(pedido.get("data"))
        if when:
            event["occurred_at"] = when
        amount = _amount(pedido.get("total"))
        if amount is not None:
            event["amount"] = amount
        record = {"external_id": f"pedido:{pedido['id']}", "events": [event]}
        if identifiers:
            record["identifiers"] = identifiers
        if contato.get("nome"):
            record["traits"] = {"full_name": contato["nome"].strip()}
        return record


def bling_date(when: datetime) -> str:
    """Bling's filter format, in Brasília time."""
    return when.astimezone(BRASILIA).strftime("%Y-%m-%d %H:%M:%S")


def _day(value: Any) -> str | None:
    """An order date ("2026-03-02") as midnight in Brasília."""
    parsed = parse_date(value, default_tz=BRASILIA) if isinstance(value, str) and not value.startswith("0000") else None
    return parsed.astimezone(BRASILIA).isoformat() if parsed else None


def _amount(value: Any) -> str | None:
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01"))) if value not in (None, "") else None
    except InvalidOperation:
        return None


@hookimpl
def cdp_source_types():
    return [Bling]
