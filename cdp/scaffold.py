"""`cdp plugins new NAME`: a pip-installable connector package that passes
its own tests out of the box (the contract kit against recorded pages).

The skeleton reads "contacts" from a JSON REST API with a bearer token,
page-number pagination and an ``updated_since`` filter; replace the API
details and the mapping, record real pages into tests/fixtures, and keep
the contract tests green.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


class ScaffoldError(Exception):
    pass


PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$title connector for cdp"
readme = "README.md"
requires-python = ">=3.11"
# Runs inside a cdp installation (which brings marshmallow, requests and the test kit).
dependencies = []

[project.optional-dependencies]
test = ["pytest>=8"]

# How cdp finds the connector: the same entry point group the first-party ones use.
[project.entry-points."cdp.plugins"]
$name = "$module.connector"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''')

README = Template('''\
# $dist

A [cdp](https://example.invalid/cdp) source connector: **$title**.

    pip install -e .              # into the environment where cdp is installed
    cdp plugins list              # shows $name
    cdp sources add minha_fonte --type $name --config base_url=https://api.example.com.br --config-file secrets.yml
    cdp sources check minha_fonte
    cdp sources sync minha_fonte
    pytest                        # the connector contract tests, against tests/fixtures

Configuration: `base_url`, `api_token` (secret: stored encrypted by cdp),
`per_page`, `start_date`.
''')

INIT = Template('''\
"""$title connector for cdp."""
''')

CONNECTOR = Template('''\
"""$title: contacts from a JSON REST API.

API assumed by this skeleton (change it to the real one):
    GET {base_url}/api/v1/contacts?page=1&per_page=100&updated_since=ISO-8601
    Authorization: Bearer {api_token}
    -> {"data": [{"id", "email", "phone", "first_name", "last_name", "city", "state", "updated_at"}],
        "meta": {"page": 1, "pages": 3}}
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import Batch, MalformedResponse, SourceConnector
from cdp.hookspecs import hookimpl

CONTACTS = "/api/v1/contacts"


class ${cls}Config(Schema):
    class Meta:
        unknown = RAISE

    base_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    api_token = fields.String(required=True, validate=validate.Length(min=8), metadata={"secret": True})
    per_page = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    start_date = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None)


class $cls(SourceConnector):
    name = "$name"
    title = "$title"
    config_schema = ${cls}Config

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        self.http = self.http_client(self.config["base_url"],
                                     headers={"Authorization": f"Bearer {self.config['api_token']}"},
                                     auth_hint="check api_token")

    def check(self) -> None:
        body = self.http.get_json(CONTACTS, params={"page": 1, "per_page": 1})
        self.http.items_of(body, "data", CONTACTS)

    def streams(self) -> list[str]:
        return ["contacts"]

    def read(self, stream: str = "contacts", cursor: Any = None, batch_size: int = 100) -> Iterator[Batch]:
        # Cursor: the last updated_at read and the ids read at exactly that time
        # (the API's filter is inclusive), so reading again yields nothing new.
        since = _date((cursor or {}).get("since")) or self.config["start_date"] or datetime(2000, 1, 1, tzinfo=timezone.utc)
        seen = set((cursor or {}).get("seen") or [])
        params = {"updated_since": since.isoformat()}
        size = min(self.config["per_page"], batch_size)
        for page in self.http.pages_by_number(CONTACTS, items="data", params=params, size=size,
                                              last_page=lambda body: (body.get("meta") or {}).get("pages")):
            records = []
            for contact in page.items:
                updated = _date(contact.get("updated_at")) if isinstance(contact, dict) else None
                if updated is None or not contact.get("id"):
                    raise MalformedResponse(f"$name: a contact has no id or updated_at")
                if updated < since or (updated == since and contact["id"] in seen):
                    continue
                records.append(self.map_contact(contact))
                if updated > since:
                    since, seen = updated, set()
                seen.add(contact["id"])
            yield Batch(records, {"since": since.isoformat(), "seen": sorted(seen)})

    def map_contact(self, contact: dict) -> dict:
        """One contact -> one record in cdp's common record model."""
        identifiers = {k: contact[k] for k in ("email", "phone") if contact.get(k)}
        traits = {k: contact[k] for k in ("first_name", "last_name", "city", "state") if contact.get(k)}
        record = {"external_id": str(contact["id"]), "observed_at": contact["updated_at"]}
        if identifiers:
            record["identifiers"] = identifiers
        if traits:
            record["traits"] = traits
        return record


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@hookimpl
def cdp_source_types():
    return [$cls]
''')

TEST = Template('''\
"""The cdp connector contract, run against the recorded pages in fixtures/."""
from pathlib import Path

from cdp.testing import ConnectorContract

from $module.connector import $cls

TOKEN = "test-token-0123456789"


class Test${cls}Contract(ConnectorContract):
    connector_class = $cls
    fixtures = Path(__file__).parent / "fixtures"
    list_path = "/api/v1/contacts"
    expected_records = 3

    def config(self, base_url):
        return {"base_url": base_url, "api_token": TOKEN}

    def bad_credentials_config(self, base_url):
        return {"base_url": base_url, "api_token": "wrong-token-9876543210"}


def test_maps_a_contact_to_the_common_record_model():
    connector = $cls({"base_url": "https://api.example.com.br", "api_token": TOKEN})
    record = connector.map_contact({"id": 7, "email": "ana@example.com.br", "first_name": "Ana",
                                    "updated_at": "2026-02-01T10:00:00Z"})
    assert record == {"external_id": "7", "observed_at": "2026-02-01T10:00:00Z",
                      "identifiers": {"email": "ana@example.com.br"}, "traits": {"first_name": "Ana"}}
''')

PAGES = {
    "contacts_page1.json": {"data": [
        {"id": "c-1001", "email": "maria.oliveira@example.com.br", "phone": "+55 19 97777-1234",
         "first_name": "Maria", "last_name": "Oliveira", "city": "Campinas", "state": "SP",
         "updated_at": "2026-02-01T10:00:00Z"},
        {"id": "c-1002", "email": "rafael.costa@example.com.br", "phone": "(71) 98888-4321",
         "first_name": "Rafael", "last_name": "Costa", "city": "Salvador", "state": "BA",
         "updated_at": "2026-02-02T14:30:00Z"},
    ], "meta": {"page": 1, "pages": 2}},
    "contacts_page2.json": {"data": [
        {"id": "c-1003", "email": "lucia.ferreira@example.org", "phone": "+55 41 99999-0000",
         "first_name": "Lúcia", "last_name": "Ferreira", "city": "Curitiba", "state": "PR",
         "updated_at": "2026-02-02T14:30:00Z"},
    ], "meta": {"page": 2, "pages": 2}},
}

ROUTES = {
    "auth": {"headers": {"Authorization": "Bearer test-token-0123456789"}},
    "routes": [
        {"path": "/api/v1/contacts", "query": {"page": "1"}, "file": "contacts_page1.json"},
        {"path": "/api/v1/contacts", "query": {"page": "2"}, "file": "contacts_page2.json"},
    ],
}


def create(name: str, directory: Path) -> Path:
    """Write the package for connector type `name` under `directory`; returns its folder."""
    if not NAME_RE.match(name or ""):
        raise ScaffoldError("NAME must be snake_case (a-z, 0-9, _), 2 to 41 characters, e.g. acme_crm")
    dist = "cdp-connector-" + name.replace("_", "-")
    module = "cdp_connector_" + name
    cls = "".join(part.capitalize() for part in name.split("_"))
    title = " ".join(part.capitalize() for part in name.split("_"))
    root = Path(directory) / dist
    if root.exists():
        raise ScaffoldError(f"{root} already exists")
    values = {"name": name, "dist": dist, "module": module, "cls": cls, "title": title}
    files = {
        "pyproject.toml": PYPROJECT.substitute(values),
        "README.md": README.substitute(values),
        f"src/{module}/__init__.py": INIT.substitute(values),
        f"src/{module}/connector.py": CONNECTOR.substitute(values),
        "tests/test_connector.py": TEST.substitute(values),
        "tests/fixtures/routes.json": json.dumps(ROUTES, indent=2) + "\n",
        **{f"tests/fixtures/{k}": json.dumps(v, indent=2, ensure_ascii=False) + "\n" for k, v in PAGES.items()},
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
