"""The app on a real PostgreSQL server: migrations, ingestion + resolution,
idempotency and the `cdp` CLI (each test gets its own fresh database)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from cdp import migrate
from cdp.ingest import ingest_batch
from cdp.models import Base, Profile, SourceRecord
from cdp.store import get_engine
from tests.conftest import make_runtime, make_settings

# One person, seen by two sources: the same valid CPF written two ways.
ERP_RECORD = {
    "external_id": "ERP-000123",
    "identifiers": {"cpf": "390.533.447-05", "email": "marcela.quintanilha@example.com.br"},
    "traits": {"full_name": "Marcela Quintanilha Prates", "city": "Curitiba", "state": "PR"},
}
LOJA_RECORD = {
    "external_id": "PED-778899",
    "identifiers": {"cpf": "39053344705", "phone": "+55 (41) 99876-5432"},
    "traits": {"first_name": "Marcela", "last_name": "Prates"},
}


def _cdp_command() -> list[str]:
    script = Path(sys.executable).parent / "cdp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdp.cli"]


def _cli_env(instance: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDP_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CDP_INSTANCE_PATH=str(instance), DATABASE_URL=database_url)
    return env


def _cdp(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(_cdp_command() + args, env=env, capture_output=True, text=True, timeout=300)


def test_migrations_reach_head_on_postgresql(tmp_path, pg_database):
    settings = make_settings(tmp_path / "instance", pg_database)
    assert not settings.is_sqlite

    migrate.upgrade(settings)

    head = ScriptDirectory.from_config(migrate.alembic_config(settings)).get_current_head()
    assert head is not None
    assert migrate.current(settings) == head
    engine = get_engine(settings.database_url)
    assert engine.dialect.name == "postgresql"
    tables = set(inspect(engine).get_table_names())
    expected = {table.name for table in Base.metadata.sorted_tables}
    assert expected <= tables, f"missing tables: {sorted(expected - tables)}"


def test_same_cpf_from_two_sources_gives_one_profile_on_postgresql(tmp_path, pg_database):
    runtime = make_runtime(make_settings(tmp_path / "instance", pg_database))

    first = ingest_batch(runtime, "erp_clientes", [ERP_RECORD])
    second = ingest_batch(runtime, "loja_virtual", [LOJA_RECORD])

    assert first.counts()["accepted"] == 1 and second.counts()["accepted"] == 1
    assert first.job_ids == [] and second.job_ids == []  # no REDIS_URL: resolved in-process
    with runtime.session() as session:
        records = session.scalars(select(SourceRecord)).all()
        active = session.scalars(select(Profile).where(Profile.status == "active")).all()
    assert len(records) == 2
    assert {r.status for r in records} == {"resolved"}
    assert len({r.profile_id for r in records}) == 1
    assert len(active) == 1
    assert records[0].profile_id == active[0].id
    assert active[0].record_count == 2
    by_id = {r.id: r for r in records}
    assert by_id[second.record_ids[0]].link_rule == "same_cpf"


def test_reingesting_the_same_records_gives_duplicates_on_postgresql(tmp_path, pg_database):
    runtime = make_runtime(make_settings(tmp_path / "instance", pg_database))
    ingest_batch(runtime, "erp_clientes", [ERP_RECORD])
    ingest_batch(runtime, "loja_virtual", [LOJA_RECORD])
    with runtime.session() as session:
        profile_before = session.scalar(select(Profile.id).where(Profile.status == "active"))

    again_erp = ingest_batch(runtime, "erp_clientes", [ERP_RECORD])
    again_loja = ingest_batch(runtime, "loja_virtual", [LOJA_RECORD])

    assert again_erp.counts() == {"accepted": 0, "updated": 0, "duplicate": 1, "rejected": 0}
    assert again_loja.counts() == {"accepted": 0, "updated": 0, "duplicate": 1, "rejected": 0}
    assert again_erp.record_ids == [] and again_loja.record_ids == []  # nothing changed, nothing to resolve
    with runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 2
        assert session.scalar(select(func.count()).select_from(Profile)) == 1
        assert session.scalar(select(func.max(SourceRecord.version))) == 1
        assert session.scalar(select(Profile.id).where(Profile.status == "active")) == profile_before


def test_cli_init_ingest_and_links_against_postgresql(tmp_path, pg_database):
    instance = tmp_path / "instance"
    env = _cli_env(instance, pg_database)
    data = tmp_path / "clientes.jsonl"
    data.write_text(
        "\n".join(json.dumps(dict(rec, source=src), ensure_ascii=False)
                  for src, rec in (("erp_clientes", ERP_RECORD), ("loja_virtual", LOJA_RECORD))) + "\n",
        encoding="utf-8",
    )

    init = _cdp(["init"], env)
    assert init.returncode == 0, init.stderr
    assert "postgresql" in init.stdout
    assert (instance / "keys.json").exists()
    assert not (instance / "cdp.sqlite3").exists()  # DATABASE_URL was honoured

    ingested = _cdp(["ingest", "jsonl", str(data)], env)
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout.strip().splitlines()[-1]) == {
        "accepted": 2, "updated": 0, "duplicate": 0, "rejected": 0}

    links = _cdp(["links"], env)
    assert links.returncode == 0, links.stderr
    rows = list(csv.DictReader(io.StringIO(links.stdout)))
    assert {(r["source"], r["external_id"]) for r in rows} == {
        ("erp_clientes", "ERP-000123"), ("loja_virtual", "PED-778899")}
    profile_ids = {r["profile_id"] for r in rows}
    assert len(profile_ids) == 1 and "" not in profile_ids

    # The CLI really wrote to this PostgreSQL database.
    with get_engine(make_settings(instance, pg_database).database_url).connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SourceRecord)) == 2
        assert conn.scalar(select(Profile.id).where(Profile.status == "active")) in profile_ids
