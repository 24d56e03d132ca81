"""Bling API v3 (contatos, pedidos de venda) on recorded rows served by a small
Bling stand-in on the local fixture server (it pages with pagina/limite and
filters dataAlteracaoInicial like Bling): the contract kit, mapping,
pagination, the incremental cursor and bad tokens."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from cdp.connectors import AuthError
from cdp.testing import ConnectorContract, FixtureServer, read_all
from plugins.bling import BRASILIA, Bling

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bling"
TOKEN = "bling-FIXTURE-access-token-61c2e0a9d4"
LISTS = {"/Api/v3/contatos": "contatos", "/Api/v3/pedidos/vendas": "pedidos_vendas"}


def serve_bling(server: FixtureServer) -> None:
    changed = json.loads((FIXTURES / "alteracoes.json").read_text())
    server.require(headers={"Authorization": f"Bearer {TOKEN}"})

    def listing(name):
        rows = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["data"]

        def handler(request):
            page, limit = int(request.args.get("pagina", 1)), int(request.args.get("limite", 100))
            since = request.args.get("dataAlteracaoInicial")
            if since:
                floor = datetime.strptime(since, "%Y-%m-%d %H:%M:%S")
                kept = [r for r in rows if datetime.strptime(changed[name][str(r["id"])], "%Y-%m-%d %H:%M:%S") >= floor]
            else:
                kept = rows
            return 200, {"data": kept[(page - 1) * limit: page * limit]}
        return handler

    for path, name in LISTS.items():
        server.add(path, handler=listing(name))
    for detail in FIXTURES.glob("contato_*.json"):
        server.add(f"/Api/v3/contatos/{detail.stem.split('_')[1]}", body=detail.read_bytes(),
                   headers={"Content-Type": "application/json"})


def config(base_url: str, **overrides) -> dict:
    return {"access_token": TOKEN, "base_url": f"{base_url}/Api/v3", "limite": 2, **overrides}


class TestBlingContract(ConnectorContract):
    connector_class = Bling
    list_path = "/Api/v3/contatos"
    expected_records = 5  # 3 contatos + 2 pedidos

    def serve(self, server):
        serve_bling(server)

    def config(self, base_url):
        return config(base_url)

    def bad_credentials_config(self, base_url):
        return config(base_url, access_token="expired-token-0000000")


@pytest.fixture
def bling(fast_retries):
    with FixtureServer() as server:
        serve_bling(server)
        yield server


def test_contatos_map_documents_contacts_and_address(bling):
    batches, _ = read_all(Bling(config(bling.url)))
    contatos = {r["external_id"]: r for b in batches["contatos"] for r in b.records}
    ana = contatos["contato:16318752811"]
    assert ana["identifiers"] == {"cpf": "05783347043", "email": "ana.rios@uol.com.br",
                                  "phone": ["(77) 94650-7529", "(77) 3421-5510"],
                                  "custom": {"bling_contato": "16318752811"}}
    assert ana["traits"]["city"] == "Vitória da Conquista" and ana["traits"]["birth_date"] == "1988-09-14"
    emilly = contatos["contato:16318752812"]
    assert "email" not in emilly["identifiers"] and "birth_date" not in emilly.get("traits", {})  # "0000-00-00"
    assert contatos["contato:16318752813"]["identifiers"]["cnpj"] == "50596505000139"


def test_pedidos_are_purchases_linked_by_document_and_contact_id(bling):
    batches, _ = read_all(Bling(config(bling.url)))
    pedidos = [r for b in batches["pedidos_vendas"] for r in b.records]
    event = pedidos[0]["events"][0]
    assert (event["type"], event["amount"], event["occurred_at"]) == ("purchase", "264.80", "2026-03-02T00:00:00-03:00")
    assert pedidos[0]["identifiers"] == {"cpf": "05783347043", "custom": {"bling_contato": "16318752811"}}
    assert pedidos[1]["identifiers"]["cnpj"] == "50596505000139"


def test_pagination_and_incremental_filter(bling):
    connector = Bling(config(bling.url))
    batches, cursors = read_all(connector)
    assert [len(b.records) for b in batches["contatos"]] == [2, 1]
    assert [h.query["pagina"] for h in bling.hits("/Api/v3/contatos")] == ["1", "2"]
    # pedidos: 2 rows fill page 1, page 2 is empty: the end
    assert [len(b.records) for b in batches["pedidos_vendas"]] == [2, 0]
    # A start date: only what changed since, in Bling's format and Brasília time.
    late = Bling(config(bling.url, start_date="2026-03-02T14:30:00Z"))  # 11:30 in Brasília
    ids = [r["external_id"] for b in late.read("contatos") for r in b.records]
    assert ids == ["contato:16318752813"]
    assert bling.hits("/Api/v3/contatos")[-1].query["dataAlteracaoInicial"] == "2026-03-02 11:30:00"
    # The next pass starts when this one began.
    again = list(connector.read("contatos", cursors["contatos"]))
    since = datetime.fromisoformat(cursors["contatos"]["since"]).astimezone(BRASILIA)
    assert bling.hits("/Api/v3/contatos")[-1].query["dataAlteracaoInicial"] == since.strftime("%Y-%m-%d %H:%M:%S")
    assert [r for b in again for r in b.records] == []


def test_expired_token_names_the_fix(bling):
    with pytest.raises(AuthError, match="bling: credentials rejected \\(HTTP 401\\): check access_token"):
        Bling(config(bling.url, access_token="expired-token-0000000")).check()


def test_a_pedido_without_date_is_a_row_error(bling):
    bling.add("/Api/v3/pedidos/vendas", query={"pagina": "1"}, json={"data": [
        {"id": 1, "numero": 9, "data": "0000-00-00", "total": 10, "contato": {"id": 2, "numeroDocumento": ""}}]})
    [batch] = Bling(config(bling.url)).read("pedidos_vendas")
    assert batch.records == [] and batch.errors == [("pedido 1", {"data": ["missing or not a date"]})]
