"""Configured sources on SQLite and PostgreSQL: encrypted secrets, config
validated by the connector's schema, the sync loop (store, then move the
cursor), a sync killed mid-way resuming without skipping or doubling,
one sync at a time, schedules without Redis, and the 0002 migration."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from marshmallow import RAISE, Schema, fields
from sqlalchemy import func, select, text

from cdp import crypto
from cdp.connectors import Batch, ConfigInvalid, ConnectorError, SourceConnector
from cdp.hookspecs import hookimpl
from cdp.models import Source, SourceRecord, utcnow
from cdp.sources import (
    SourceNotFound,
    SyncBusy,
    SyncFailed,
    add_source,
    build_connector,
    describe_source,
    due_sources,
    next_run_at,
    parse_every,
    set_schedule,
    sync_runs,
    sync_source,
)
from cdp.sync_models import SyncRun
from tests.connectors.vtex_fake import APP_KEY, APP_TOKEN, vtex_config

PEOPLE = 9


class FlakyConfig(Schema):
    class Meta:
        unknown = RAISE

    count = fields.Integer(load_default=PEOPLE)
    fail_after_batches = fields.Integer(load_default=0)  # 0: never
    api_token = fields.String(required=True, metadata={"secret": True})


class Flaky(SourceConnector):
    """Nine people in batches of two (cursor: rows read); can blow up after N batches."""

    name = "flaky"
    title = "Flaky test source"
    config_schema = FlakyConfig

    def streams(self):
        return ["people"]

    def read(self, stream: str, cursor: Any = None, batch_size: int = 2):
        start, done = int(cursor or 0), 0
        for first in range(start, self.config["count"], 2):
            if self.config["fail_after_batches"] and done == self.config["fail_after_batches"]:
                raise RuntimeError("lost connection while reading pessoa3@example.com.br")  # personal text
            rows = range(first, min(first + 2, self.config["count"]))
            yield Batch([{"external_id": f"F-{i}", "identifiers": {"email": f"pessoa{i}@example.com.br"},
                          "traits": {"first_name": f"Pessoa {i}"}} for i in rows], cursor=rows[-1] + 1)
            done += 1


class FlakyPlugin:
    @hookimpl
    def cdp_source_types(self):
        return [Flaky]


@pytest.fixture
def flaky(test_plugin):
    test_plugin(FlakyPlugin(), "flaky_test_plugin")


def stored_ids(runtime, source: str) -> list[str]:
    from cdp.links import iter_links

    return sorted(ext for src, ext, _ in iter_links(runtime) if src == source)


def versions(runtime) -> set[int]:
    with runtime.session() as session:
        return set(session.scalars(select(SourceRecord.version)))


# -- configuration -------------------------------------------------------------------------------


def test_secrets_are_stored_encrypted_and_bound_to_their_source(any_runtime, vtex):
    add_source(any_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url), trust=70)
    add_source(any_runtime, "outra_loja", "vtex", vtex_config(vtex.server.url, app_token="another-token-123"))
    with any_runtime.session() as session:
        row = session.get(Source, "loja_vtex")
        assert row.plugin == "vtex" and row.trust == 70
        assert "app_token" not in row.config and "app_key" not in row.config and "webhook_token" not in row.config
        assert row.config["account"] == "lojaexemplo"
        assert APP_TOKEN.encode() not in row.secrets_ct and APP_KEY.encode() not in row.secrets_ct
        raw = session.execute(text("SELECT config FROM sources WHERE name = 'loja_vtex'")).scalar()
        assert APP_TOKEN not in str(raw)
        # A secrets ciphertext copied to another source does not decrypt (AAD: table, source, field).
        other = session.get(Source, "outra_loja")
        keys = any_runtime.keys(session)
        with pytest.raises(crypto.DecryptionError):
            crypto.decrypt_json(keys.get(row.secrets_key_id), other.secrets_ct, "sources", "loja_vtex", "secrets")
        assert row.secrets_key_id != other.secrets_key_id  # one data key per source
    connector, _ = build_connector(any_runtime, "loja_vtex")
    assert connector.config["app_token"] == APP_TOKEN and connector.source == "loja_vtex"


def test_described_source_lists_secret_names_never_values(any_runtime, vtex):
    add_source(any_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    with any_runtime.session() as session:
        row = session.get(Source, "loja_vtex")
        session.expunge(row)
    view = describe_source(any_runtime, row)
    assert view["secrets"] == ["app_key", "app_token", "webhook_token"]
    assert APP_TOKEN not in str(view) and APP_KEY not in str(view)


def test_config_errors_name_the_field_and_store_nothing(runtime):
    with pytest.raises(ConfigInvalid) as info:
        add_source(runtime, "loja", "vtex", {"account": "lojaexemplo", "app_key": "k"})
    assert "app_token" in info.value.errors
    with pytest.raises(ConnectorError, match="unknown source type 'shopify'"):
        add_source(runtime, "loja", "shopify", {})
    with pytest.raises(ConnectorError, match="snake_case"):
        add_source(runtime, "Loja VTEX", "vtex", {})
    with runtime.session() as session:
        assert session.get(Source, "loja") is None


def test_update_merges_into_the_stored_configuration(runtime, vtex):
    add_source(runtime, "loja", "vtex", vtex_config(vtex.server.url))
    with pytest.raises(ConnectorError, match="already exists"):
        add_source(runtime, "loja", "vtex", vtex_config(vtex.server.url))
    add_source(runtime, "loja", None, {"app_token": "rotated-token-0001", "per_page": "50"}, update=True)
    connector, _ = build_connector(runtime, "loja")
    assert connector.config["app_token"] == "rotated-token-0001" and connector.config["per_page"] == 50
    assert connector.config["app_key"] == APP_KEY
    with pytest.raises(ConnectorError, match="type cannot change"):
        add_source(runtime, "loja", "file", {}, update=True)


def test_an_api_source_is_not_configured(runtime):
    from cdp.ingest import ingest_batch

    ingest_batch(runtime, "crm", [{"external_id": "1", "identifiers": {"email": "a@example.com"}}])
    with pytest.raises(SourceNotFound, match="not configured"):
        sync_source(runtime, "crm")
    with pytest.raises(SourceNotFound, match="no source nada"):
        sync_source(runtime, "nada")


# -- sync ----------------------------------------------------------------------------------------


def test_sync_stores_batches_then_saves_the_cursor(any_runtime, vtex):
    add_source(any_runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url))
    seen = []
    result = sync_source(any_runtime, "loja_vtex", progress=seen.append)
    assert result.status == "ok" and result.batches == 2 and seen == [3, 2]
    assert result.counts == {"accepted": 5, "updated": 0, "duplicate": 0, "rejected": 0}
    assert len(stored_ids(any_runtime, "loja_vtex")) == 5
    with any_runtime.session() as session:
        source = session.get(Source, "loja_vtex")
        assert source.cursor["orders"]["since"] == "2026-03-04T18:22:10+00:00"
        assert source.last_sync_status == "ok" and source.sync_started_at is None
        # Ana's two orders (same CPF) resolved to one profile.
        profiles = session.scalars(select(SourceRecord.profile_id)).all()
        assert len(set(profiles)) == 4 and None not in profiles
    again = sync_source(any_runtime, "loja_vtex")
    assert again.counts == {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    full = sync_source(any_runtime, "loja_vtex", full=True)
    assert full.counts["duplicate"] == 5 and full.counts["accepted"] == 0
    runs = sync_runs(any_runtime, "loja_vtex")
    assert [(r.status, r.accepted, r.duplicate, r.full) for r in runs] == [
        ("ok", 0, 5, True), ("ok", 0, 0, False), ("ok", 5, 0, False)]
    assert all(r.finished_at >= r.started_at for r in runs)


def test_a_sync_killed_mid_way_resumes_from_the_last_committed_cursor(any_runtime, flaky):
    add_source(any_runtime, "flaky", "flaky", {"api_token": "tok-abcdef-123", "fail_after_batches": 2})
    with pytest.raises(SyncFailed) as info:
        sync_source(any_runtime, "flaky", batch_size=2)
    assert "pessoa3" not in str(info.value) and "RuntimeError" in str(info.value)
    assert stored_ids(any_runtime, "flaky") == ["F-0", "F-1", "F-2", "F-3"]
    with any_runtime.session() as session:
        source = session.get(Source, "flaky")
        assert source.cursor == {"people": 4} and source.last_sync_status == "failed"
        assert source.sync_started_at is None  # the next sync may start
        (run,) = session.scalars(select(SyncRun)).all()
        assert run.status == "failed" and run.batches == 2 and run.accepted == 4
        assert run.error.startswith("unexpected RuntimeError at test_sources.py:") and "pessoa" not in run.error

    add_source(any_runtime, "flaky", None, {"fail_after_batches": 0}, update=True)  # the source is back
    result = sync_source(any_runtime, "flaky", batch_size=2)
    assert result.counts == {"accepted": PEOPLE - 4, "updated": 0, "duplicate": 0, "rejected": 0}
    assert stored_ids(any_runtime, "flaky") == sorted(f"F-{i}" for i in range(PEOPLE))
    assert versions(any_runtime) == {1}  # every record exactly once


def test_a_crash_between_storing_and_saving_the_cursor_re_reads_never_skips(any_runtime, flaky, monkeypatch):
    import cdp.sources as sources

    add_source(any_runtime, "flaky", "flaky", {"api_token": "tok-abcdef-123"})
    real_advance, calls = sources._advance, []

    def dies_on_second_cursor(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped right after batch 2 was committed
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(sources, "_advance", dies_on_second_cursor)
    with pytest.raises(KeyboardInterrupt):
        sync_source(any_runtime, "flaky", batch_size=2)
    monkeypatch.setattr(sources, "_advance", real_advance)
    assert stored_ids(any_runtime, "flaky") == ["F-0", "F-1", "F-2", "F-3"]  # batch 2 is stored...
    with any_runtime.session() as session:
        assert session.get(Source, "flaky").cursor == {"people": 2}  # ...but its cursor is not

    result = sync_source(any_runtime, "flaky", batch_size=2)
    assert result.counts == {"accepted": PEOPLE - 4, "updated": 0, "duplicate": 2, "rejected": 0}
    assert stored_ids(any_runtime, "flaky") == sorted(f"F-{i}" for i in range(PEOPLE))
    assert versions(any_runtime) == {1}
    with any_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == PEOPLE


def test_one_sync_at_a_time_and_a_dead_one_expires(runtime, flaky):
    add_source(runtime, "flaky", "flaky", {"api_token": "tok-abcdef-123"})
    with runtime.session() as session:
        session.get(Source, "flaky").sync_started_at = utcnow()
    with pytest.raises(SyncBusy, match="already running"):
        sync_source(runtime, "flaky")
    with runtime.session() as session:
        session.get(Source, "flaky").sync_started_at = utcnow() - timedelta(hours=2)  # its worker died
    assert sync_source(runtime, "flaky").counts["accepted"] == PEOPLE


def test_unknown_stream_is_named(runtime, flaky):
    add_source(runtime, "flaky", "flaky", {"api_token": "tok-abcdef-123"})
    with pytest.raises(ConnectorError, match="no stream 'orders' \\(streams: people\\)"):
        sync_source(runtime, "flaky", stream="orders")
    assert sync_source(runtime, "flaky", stream="people").counts["accepted"] == PEOPLE


def test_connector_errors_are_stored_as_their_message(runtime, vtex):
    add_source(runtime, "loja_vtex", "vtex", vtex_config(vtex.server.url, app_token="WRONG-TOKEN-0000"))
    with pytest.raises(ConnectorError, match="credentials rejected"):
        sync_source(runtime, "loja_vtex")
    (run,) = sync_runs(runtime, "loja_vtex")
    assert run.status == "failed"
    assert run.error == "vtex: credentials rejected (HTTP 401): check app_key/app_token (and the key's OMS permissions)"


# -- schedules (without Redis) -----------------------------------------------------------------------


@pytest.mark.parametrize("text,minutes", [("90", 90), ("30m", 30), ("2h", 120), ("1d", 1440), (" 15 min ", 15)])
def test_parse_every(text, minutes):
    assert parse_every(text) == minutes


@pytest.mark.parametrize("text", ["0", "soon", "-5m", "1w", ""])
def test_parse_every_refuses_nonsense(text):
    with pytest.raises(ConnectorError, match="--every"):
        parse_every(text)


def test_schedules_and_due_sources(runtime, flaky):
    from datetime import datetime, timezone

    add_source(runtime, "flaky", "flaky", {"api_token": "tok-abcdef-123"})
    add_source(runtime, "nightly", "flaky", {"api_token": "tok-abcdef-123"})
    assert set_schedule(runtime, "flaky", every_minutes=60) == {"every_minutes": 60}
    assert set_schedule(runtime, "nightly", cron="0 3 * * *") == {"cron": "0 3 * * *"}
    with pytest.raises(ConnectorError, match="--cron"):
        set_schedule(runtime, "nightly", cron="every night")
    at = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    assert next_run_at({"every_minutes": 60}, at) == datetime(2026, 3, 1, 13, 30, tzinfo=timezone.utc)
    assert next_run_at({"cron": "0 3 * * *"}, at) == datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)
    assert due_sources(runtime) == ["flaky", "nightly"]  # never synced: due now
    sync_source(runtime, "flaky")
    assert due_sources(runtime) == ["nightly"]
    assert due_sources(runtime, utcnow() + timedelta(minutes=61)) == ["flaky", "nightly"]
    assert set_schedule(runtime, "nightly") is None
    assert due_sources(runtime) == []


# -- the migration ---------------------------------------------------------------------------------


def test_migration_matches_the_models_and_downgrades(tmp_path, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from cdp import migrate
    from cdp.models import Base
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "mig", backend)
    migrate.upgrade(settings, "0002")
    from cdp.store import get_engine

    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [d for d in diffs if "sources" in repr(d) or "sync_runs" in repr(d)]
    assert mine == []
    migrate.downgrade(settings, "0001")
    with engine.connect() as conn:
        from sqlalchemy import inspect

        inspector = inspect(conn)
        assert "sync_runs" not in inspector.get_table_names()
        assert "config" not in {c["name"] for c in inspector.get_columns("sources")}
    migrate.upgrade(settings, "0002")
