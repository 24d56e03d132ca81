"""The standard contract tests every source connector should pass.

Subclass :class:`ConnectorContract` in a test module (its name must start
with ``Test``), say which connector and where its recorded pages are, and
give a valid and a bad-credentials configuration pointing at the fixture
server::

    class TestAcmeContract(ConnectorContract):
        connector_class = AcmeContacts
        fixtures = Path(__file__).parent / "fixtures"

        def config(self, base_url):
            return {"base_url": base_url, "api_token": "test-token"}

        def bad_credentials_config(self, base_url):
            return {"base_url": base_url, "api_token": "wrong-token"}

The inherited tests check: the configuration schema (valid config loads, a
missing or unknown field is named), `check()` with good and bad
credentials, every record against the common record model, cursors (JSON,
resuming never skips, reading again from the last cursor yields nothing new),
idempotent re-ingestion into a real (temporary SQLite) database, retries on
429/5xx, clear errors on a malformed page, no secret in logs or error text,
data-subject requests and, when `webhook_delivery` is given, webhooks.
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from pathlib import Path
from typing import Any, ClassVar

import pytest
from marshmallow import Schema

from cdp import http as cdp_http
from cdp.connectors import (
    ACTION_STATUSES,
    ActionResult,
    AuthError,
    ConfigInvalid,
    ConnectorError,
    SourceConnector,
    SourceUnavailable,
    Subject,
    WebhookError,
    secret_fields,
)
from cdp.testing.server import FixtureServer

SECRET_LOOKING = re.compile(r"(token|secret|password|passwd|api_?key|app_?key|private_?key|client_secret)", re.I)


def make_test_runtime(directory: Path):
    """A migrated SQLite database and fresh keys under `directory`."""
    from cdp import migrate
    from cdp.config import Settings
    from cdp.crypto import Keyring
    from cdp.store import Runtime

    settings = Settings.from_env({"CDP_INSTANCE_PATH": str(directory)})
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    return Runtime(settings, keyring)


def read_all(connector: SourceConnector, cursors: dict | None = None, batch_size: int = 100):
    """Every batch of every stream: ({stream: [batches]}, {stream: last cursor})."""
    batches: dict[str, list] = {}
    last: dict[str, Any] = {}
    for stream in connector.streams():
        cursor = (cursors or {}).get(stream)
        batches[stream] = []
        for batch in connector.read(stream, cursor, batch_size):
            batches[stream].append(batch)
            cursor = batch.cursor
        last[stream] = cursor
    return batches, last


def _records(batches: dict[str, list]) -> list[dict]:
    return [r for stream in batches.values() for b in stream for r in b.records]


def _canonical(record: dict) -> str:
    return json.dumps({k: v for k, v in record.items() if k != "observed_at"}, sort_keys=True, default=str)


class ConnectorContract:
    """Inherit the contract tests; see the module doc."""

    connector_class: ClassVar[type[SourceConnector]]
    fixtures: ClassVar[Path | None] = None  # directory holding routes.json and recorded pages
    list_path: ClassVar[str | None] = None  # the path faults are injected on (default: the first route)
    batch_size: ClassVar[int] = 100
    expected_records: ClassVar[int | None] = None  # when set, a full read yields exactly this many
    check_entry_point: ClassVar[bool] = True  # the type is installed under the cdp.plugins entry point

    # -- what a subclass provides --
    def config(self, base_url: str) -> dict:
        raise NotImplementedError("return a valid configuration pointing at base_url")

    def bad_credentials_config(self, base_url: str) -> dict:
        raise NotImplementedError("return the valid configuration with wrong credentials")

    def serve(self, server: FixtureServer) -> None:
        """Set up the fixture server (default: load `fixtures`/routes.json)."""
        if self.fixtures is None:
            raise NotImplementedError("set `fixtures` or override serve()")
        server.load(self.fixtures)

    def webhook_delivery(self, base_url: str, signed: bool = True) -> tuple[bytes, dict] | None:
        """(body, headers) of one webhook delivery, correctly signed or not;
        None when the connector does not receive webhooks."""
        return None

    # -- fixtures --
    @pytest.fixture(autouse=True)
    def _fast_retries(self, monkeypatch):
        # Contract runs should not wait seconds per retry; Retry-After is still honoured (capped at 1 s).
        monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=2, backoff=0.01,
                                                                            retry_after_max=1))

    @pytest.fixture
    def contract_server(self):
        with FixtureServer() as server:
            self.serve(server)
            yield server

    @pytest.fixture
    def contract_runtime(self, tmp_path):
        return make_test_runtime(tmp_path / "contract-instance")

    def make(self, base_url: str, config: dict | None = None) -> SourceConnector:
        return self.connector_class(config if config is not None else self.config(base_url))

    def _fault_path(self, server: FixtureServer) -> str:
        if self.list_path:
            return self.list_path
        if not server.routes:
            pytest.skip("no routes to inject faults on; set list_path")
        return server.routes[0].path

    def _secrets(self, base_url: str) -> list[str]:
        names = secret_fields(self.connector_class.config_schema)
        values = []
        for config in (self.config(base_url), self.bad_credentials_config(base_url)):
            values += [str(v) for k, v in config.items() if k in names and v not in (None, "")]
        return [v for v in values if len(v) >= 4]

    # -- the connector class and its configuration --
    def test_declares_name_title_and_schema(self):
        cls = self.connector_class
        assert re.match(r"^[a-z][a-z0-9_]{0,63}$", cls.name or ""), "name must be snake_case"
        assert isinstance(cls.title, str) and cls.title.strip(), "set a human title"
        assert isinstance(cls.config_schema, type) and issubclass(cls.config_schema, Schema)

    def test_registered_through_the_entry_point(self):
        if not self.check_entry_point:
            pytest.skip("check_entry_point is off")
        from cdp import plugins

        plugins.reset()
        assert plugins.source_types().get(self.connector_class.name) is self.connector_class, (
            f"{self.connector_class.name} is not provided by an installed cdp.plugins entry point")

    def test_valid_config_loads(self, contract_server):
        connector = self.make(contract_server.url)
        assert isinstance(connector.config, dict)

    def test_missing_required_field_is_named(self, contract_server):
        good = self.config(contract_server.url)
        schema = self.connector_class.config_schema()
        required = [f.data_key or name for name, f in schema.fields.items() if f.required]
        if not required:
            pytest.skip("the schema has no required field")
        for name in required:
            config = {k: v for k, v in good.items() if k != name}
            with pytest.raises(ConfigInvalid) as info:
                self.connector_class(config)
            assert name in info.value.errors and name in str(info.value)

    def test_unknown_field_is_named(self, contract_server):
        config = {**self.config(contract_server.url), "no_such_option": "x"}
        with pytest.raises(ConfigInvalid) as info:
            self.connector_class(config)
        assert "no_such_option" in str(info.value)

    def test_secret_looking_fields_are_marked_secret(self):
        schema = self.connector_class.config_schema()
        unmarked = [n for n, f in schema.fields.items() if SECRET_LOOKING.search(n) and not f.metadata.get("secret")]
        assert not unmarked, f"mark these fields metadata={{'secret': True}}: {unmarked}"

    # -- check --
    def test_check_passes_with_good_credentials(self, contract_server):
        self.make(contract_server.url).check()

    def test_check_fails_clearly_with_bad_credentials(self, contract_server):
        connector = self.make(contract_server.url, self.bad_credentials_config(contract_server.url))
        with pytest.raises(AuthError) as info:
            connector.check()
        message = str(info.value)
        assert self.connector_class.name in message, "the message must name the connector"
        for secret in self._secrets(contract_server.url):
            assert secret not in message

    # -- reading --
    def test_records_conform_to_the_common_model(self, contract_server):
        from schemas.record import load_record

        connector = self.make(contract_server.url)
        batches, _ = read_all(connector, batch_size=self.batch_size)
        records = _records(batches)
        assert records, "the fixtures should yield records"
        if self.expected_records is not None:
            assert len(records) == self.expected_records
        for record in records:
            load_record(record, connector.source)  # raises ValidationError naming the field
        for stream in batches.values():
            for batch in stream:
                json.dumps(batch.cursor)  # cursors are stored as JSON

    def test_reading_again_from_the_last_cursor_yields_nothing_new(self, contract_server):
        connector = self.make(contract_server.url)
        first, last = read_all(connector, batch_size=self.batch_size)
        again, _ = read_all(self.make(contract_server.url), json.loads(json.dumps(last)), self.batch_size)
        for stream, batches in again.items():
            records = [r for b in batches for r in b.records]
            before = [r for b in first[stream] for r in b.records]
            # At most the records of the last batch again, unchanged (an inclusive "since" boundary).
            tail = next((b.records for b in reversed(first[stream]) if b.records), [])
            allowed = {_canonical(r) for r in tail}
            new = [r.get("external_id") for r in records if _canonical(r) not in allowed]
            assert new == [], f"{stream}: records read again after the last cursor: {new}"
            assert len(records) < len(before) or not before, f"{stream}: the last cursor reads everything again"

    def test_resuming_from_a_batch_cursor_skips_nothing(self, contract_server):
        connector = self.make(contract_server.url)
        batches, _ = read_all(connector, batch_size=self.batch_size)
        for stream, stream_batches in batches.items():
            if len(stream_batches) < 2:
                continue
            everything = {r["external_id"] for b in stream_batches for r in b.records}
            before = {r["external_id"] for r in stream_batches[0].records}
            resumed = list(self.make(contract_server.url).read(stream, stream_batches[0].cursor, self.batch_size))
            after = {r["external_id"] for b in resumed for r in b.records}
            assert everything <= before | after, f"{stream}: resuming skipped {sorted(everything - before - after)}"

    def test_ingesting_twice_stores_duplicates_only(self, contract_server, contract_runtime):
        from cdp.ingest import ingest_batch

        connector = self.make(contract_server.url)
        batches, _ = read_all(connector, batch_size=self.batch_size)
        totals = []
        for _ in range(2):
            counts = {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
            for stream in batches.values():
                for batch in stream:
                    if batch.records:
                        summary = ingest_batch(contract_runtime, connector.source, batch.records,
                                               plugin=connector.name)
                        for k, v in summary.counts().items():
                            counts[k] += v
            totals.append(counts)
        first, second = totals
        assert first["rejected"] == 0, f"records rejected by ingestion: {first}"
        assert second["accepted"] == second["updated"] == second["rejected"] == 0
        assert second["duplicate"] == first["accepted"] + first["updated"] + first["duplicate"]

    # -- failures --
    def test_429_with_retry_after_is_retried(self, contract_server):
        path = self._fault_path(contract_server)
        expected = _records(read_all(self.make(contract_server.url), batch_size=self.batch_size)[0])
        contract_server.fail(path, 429, retry_after=1)
        got = _records(read_all(self.make(contract_server.url), batch_size=self.batch_size)[0])
        assert [r["external_id"] for r in got] == [r["external_id"] for r in expected]
        assert 429 in [r.status for r in contract_server.hits(path)]

    def test_5xx_is_retried_then_reported_unavailable(self, contract_server):
        path = self._fault_path(contract_server)
        contract_server.fail(path, 503, times=1)
        assert _records(read_all(self.make(contract_server.url), batch_size=self.batch_size)[0])
        contract_server.fail(path, 500, times=100)
        with pytest.raises(SourceUnavailable) as info:
            read_all(self.make(contract_server.url), batch_size=self.batch_size)
        assert self.connector_class.name in str(info.value)

    def test_malformed_page_is_a_clear_connector_error(self, contract_server):
        contract_server.malformed(self._fault_path(contract_server))
        with pytest.raises(ConnectorError) as info:
            read_all(self.make(contract_server.url), batch_size=self.batch_size)
        assert self.connector_class.name in str(info.value)

    def test_no_secret_in_logs_or_error_text(self, contract_server, caplog):
        secrets = self._secrets(contract_server.url)
        if not secrets:
            pytest.skip("the connector has no secret fields")
        caplog.set_level(logging.DEBUG)
        texts: list[str] = []
        connector = self.make(contract_server.url)
        connector.check()
        read_all(connector, batch_size=self.batch_size)
        attempts = [
            lambda: self.make(contract_server.url, self.bad_credentials_config(contract_server.url)).check(),
            lambda: (contract_server.fail("*", 500, times=100), self.make(contract_server.url).check()),
            lambda: self.connector_class({k: v for k, v in self.config(contract_server.url).items()
                                          if k not in secret_fields(self.connector_class.config_schema)}
                                         | {"no_such_option": secrets[0]}),
        ]
        for attempt in attempts:
            try:
                attempt()
            except Exception as exc:  # noqa: BLE001 - every failure's text is inspected
                texts.append("".join(traceback.format_exception(exc)))
            contract_server.clear_faults()
        assert len(texts) == len(attempts), "each attempt above should have failed"
        for secret in secrets:
            assert secret not in caplog.text, "a secret value reached the logs"
            for text in texts:
                assert secret not in text, "a secret value reached an exception's text"

    # -- data-subject requests and webhooks --
    def test_subject_requests_answer_with_a_known_status(self, contract_server):
        connector = self.make(contract_server.url)
        for action in ("delete", "correct"):
            result = connector.on_subject_request(action, Subject(external_ids=["fixture-1"],
                                                                  identifiers={"email": ["titular@example.com"]}))
            assert isinstance(result, ActionResult) and result.status in ACTION_STATUSES
            if result.status == "manual":
                assert result.detail.strip(), "a manual action needs an instruction"

    def test_webhook_delivery_maps_and_bad_signature_is_refused(self, contract_server):
        from schemas.record import load_record

        delivery = self.webhook_delivery(contract_server.url, signed=True)
        if delivery is None:
            pytest.skip("no webhook_delivery given")
        connector = self.make(contract_server.url)
        body, headers = delivery
        for record in connector.handle_webhook(body, headers):
            load_record(record, connector.source)
        bad_body, bad_headers = self.webhook_delivery(contract_server.url, signed=False)
        with pytest.raises(WebhookError) as info:
            connector.handle_webhook(bad_body, bad_headers)
        assert info.value.status in (401, 403)
