"""The `cdp` command as a user runs it: a real subprocess each time."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.factories import CPF_A


def run_cdp(instance, *args, env=None, check=True, stdin=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CDP_KEYRING")}
    full_env["CDP_INSTANCE_PATH"] = str(instance)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "cdp.cli", *args], capture_output=True, text=True, env=full_env,
                          input=stdin, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cdp {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def instance(tmp_path):
    path = tmp_path / "instance"
    run_cdp(path, "init")
    return path


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("env,needle", [
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://x@localhost/db"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
    ({"CDP_NAME_THRESHOLD": "abc"}, "CDP_NAME_THRESHOLD"),
    ({"CDP_MATCH_RULES": "cpf,horoscope"}, "CDP_MATCH_RULES"),
])
def test_malformed_setting_is_one_line_and_exit_2(tmp_path, env, needle):
    proc = run_cdp(tmp_path, "links", env=env, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_command_before_init_says_run_init(tmp_path):
    proc = run_cdp(tmp_path / "fresh", "links", check=False)
    assert proc.returncode == 2
    assert "cdp init" in proc.stderr and "Traceback" not in proc.stderr


def test_init_creates_owner_only_keys_and_schema(instance):
    assert oct((instance / "keys.json").stat().st_mode & 0o777) == "0o600"
    from cdp import migrate
    from tests.conftest import make_settings

    proc = run_cdp(instance, "db", "current")
    assert proc.stdout.strip() == migrate.head(make_settings(instance))


def test_init_twice_keeps_keys(instance):
    before = (instance / "keys.json").read_bytes()
    run_cdp(instance, "init")
    assert (instance / "keys.json").read_bytes() == before


def test_ingest_jsonl_and_links(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [
        {"source": "erp", "external_id": "E1", "identifiers": {"cpf": CPF_A}, "traits": {"full_name": "Ana Souza"}},
        {"source": "loja", "external_id": "L1", "identifiers": {"cpf": "52998224725", "email": "ana@example.com"}},
    ])
    proc = run_cdp(instance, "ingest", "jsonl", str(data))
    assert json.loads(proc.stdout.strip().splitlines()[-1])["accepted"] == 2
    rows = list(csv.DictReader(io.StringIO(run_cdp(instance, "links").stdout)))
    assert {(r["source"], r["external_id"]) for r in rows} == {("erp", "E1"), ("loja", "L1")}
    assert len({r["profile_id"] for r in rows}) == 1


def _as_if_indexed_by_an_older_release(instance, every=True):
    import sqlite3

    with sqlite3.connect(instance / "cdp.sqlite3") as db:
        db.execute("UPDATE source_records SET keys_version = 0"
                   + ("" if every else " WHERE id = (SELECT min(id) FROM source_records)"))


def test_identity_rekey_refreshes_records_of_an_older_release_and_keeps_links(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [
        {"source": "erp", "external_id": "E1", "identifiers": {"cpf": CPF_A}, "traits": {"full_name": "Ana Souza"}},
        {"source": "loja", "external_id": "L1", "identifiers": {"cpf": CPF_A}, "traits": {"birth_date": "17/05/1990"}},
    ])
    run_cdp(instance, "ingest", "jsonl", str(data))
    before = run_cdp(instance, "links").stdout
    assert run_cdp(instance, "identity", "rekey").stdout.strip() == "refreshed the keys of 0 record(s)"  # current
    _as_if_indexed_by_an_older_release(instance, every=False)
    proc = run_cdp(instance, "identity", "rekey")
    assert proc.stdout.strip() == "refreshed the keys of 1 record(s)"
    assert "keys" in proc.stderr  # progress bar
    assert run_cdp(instance, "identity", "rekey", "--all").stdout.strip() == "refreshed the keys of 2 record(s)"
    assert run_cdp(instance, "links").stdout == before


def test_identity_rebuild_rekeys_first_unless_told_the_keys_are_current(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [
        {"source": "erp", "external_id": "E1", "identifiers": {"cpf": CPF_A}, "traits": {"full_name": "Ana Souza"}},
        {"source": "loja", "external_id": "L1", "identifiers": {"cpf": CPF_A}},
    ])
    run_cdp(instance, "ingest", "jsonl", str(data))
    before = run_cdp(instance, "links").stdout
    current = run_cdp(instance, "identity", "rebuild")
    assert "keys:" not in current.stderr and "rank:" in current.stderr and "edges" in current.stderr  # nothing to refresh
    _as_if_indexed_by_an_older_release(instance)
    full = run_cdp(instance, "identity", "rebuild")
    assert "keys:" in full.stderr and json.loads(full.stdout)["changed_records"] == 0
    _as_if_indexed_by_an_older_release(instance)
    kept = run_cdp(instance, "identity", "rebuild", "--keep-keys")
    assert "keys:" not in kept.stderr and "edges" in kept.stderr
    assert run_cdp(instance, "links").stdout == before


def test_identity_rebuild_refuses_to_run_twice_at_once(instance):
    from cdp.config import Settings
    from cdp.crypto import Keyring
    from cdp.store import Runtime
    from identity.rebuild import exclusive

    settings = Settings.from_env({"CDP_INSTANCE_PATH": str(instance)})
    with exclusive(Runtime(settings, Keyring.load_or_create(settings))):  # a rebuild in another process
        proc = run_cdp(instance, "identity", "rebuild", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: another `cdp identity rebuild` is running on this database; wait for it to finish")
    assert json.loads(run_cdp(instance, "identity", "rebuild").stdout)["changed_records"] == 0  # free again


def test_ingest_reports_rejected_rows_by_position(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [{"source": "erp", "external_id": "E1", "identifiers": {"email": "a@b.com"}}])
    with open(data, "a") as fh:
        fh.write("{not json\n")
    proc = run_cdp(instance, "ingest", "jsonl", str(data))
    assert "line 2" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rejected"] == 1


def test_ingest_missing_file_is_one_line(instance, tmp_path):
    proc = run_cdp(instance, "ingest", "jsonl", str(tmp_path / "nope.jsonl"), check=False)
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_split_and_undo_from_cli(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [
        {"source": "erp", "external_id": "E1", "identifiers": {"cpf": CPF_A}, "traits": {"full_name": "Ana Souza"}},
        {"source": "forms", "external_id": "F1", "identifiers": {"email": "ana@example.com"}},
        {"source": "loja", "external_id": "L1", "identifiers": {"cpf": CPF_A, "email": "ana@example.com"}},
    ])
    run_cdp(instance, "ingest", "jsonl", str(data))
    rows = list(csv.DictReader(io.StringIO(run_cdp(instance, "links").stdout)))
    pid = rows[0]["profile_id"]
    view = json.loads(run_cdp(instance, "profiles", "show", pid).stdout)
    merge = next(m for m in view["merges"] if m["kind"] == "merge")
    restored = run_cdp(instance, "profiles", "undo-merge", str(merge["id"])).stdout.strip()
    rows = list(csv.DictReader(io.StringIO(run_cdp(instance, "links").stdout)))
    assert len({r["profile_id"] for r in rows}) == 2
    assert restored in {r["profile_id"] for r in rows}
    again = run_cdp(instance, "profiles", "undo-merge", str(merge["id"]), check=False)
    assert again.returncode == 2 and "already undone" in again.stderr


def test_keys_rotate_and_retire(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [{"source": "erp", "external_id": "E1", "identifiers": {"cpf": CPF_A}}])
    run_cdp(instance, "ingest", "jsonl", str(data))
    old = set(json.loads((instance / "keys.json").read_text())["keks"])
    assert "re-wrapped" in run_cdp(instance, "keys", "rotate").stdout
    assert "retired 1" in run_cdp(instance, "keys", "retire").stdout
    ring = json.loads((instance / "keys.json").read_text())
    assert not (set(ring["keks"]) & old)
    rows = list(csv.DictReader(io.StringIO(run_cdp(instance, "links").stdout)))  # still decrypts
    assert rows[0]["external_id"] == "E1"


def test_apikey_create_list_revoke(instance):
    token = run_cdp(instance, "apikey", "create", "--name", "crm", "--scopes", "profiles:read").stdout.strip()
    assert token.startswith("cdp_")
    prefix = token.split("_")[1]
    assert "active" in run_cdp(instance, "apikey", "list").stdout
    run_cdp(instance, "apikey", "revoke", prefix)
    assert "revoked" in run_cdp(instance, "apikey", "list").stdout


def test_apikey_unknown_scope_is_refused(instance):
    proc = run_cdp(instance, "apikey", "create", "--name", "x", "--scopes", "everything", check=False)
    assert proc.returncode == 2 and "--scopes" in proc.stderr


def test_plugins_list_shows_first_party_file_source(instance):
    out = run_cdp(instance, "plugins", "list").stdout
    assert "file_source" in out and "cdp_source_types" in out
    types_line = next(line for line in out.splitlines() if line.startswith("source types:"))
    assert "file" in types_line.split(":", 1)[1].replace(" ", "").split(",")
