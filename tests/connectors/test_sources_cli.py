"""`cdp sources ...` as an operator runs it (real subprocesses), against a
VTEX stand-in on a real local HTTP server: secrets never printed, bad
configuration exit 2 with one line naming the field, a progress bar."""
from __future__ import annotations

import json

import pytest

from tests.connectors.vtex_fake import APP_KEY, APP_TOKEN, WEBHOOK_TOKEN
from tests.test_cli import run_cdp


@pytest.fixture
def instance(tmp_path):
    path = tmp_path / "instance"
    run_cdp(path, "init")
    return path


def add_vtex(instance, url, *extra, check=True):
    return run_cdp(instance, "sources", "add", "loja_vtex", "--type", "vtex", "--config", "account=lojaexemplo",
                   "--config", f"base_url={url}", "--config", f"app_key={APP_KEY}", "--config",
                   f"app_token={APP_TOKEN}", "--config", "per_page=3", "--config", "start_date=2026-01-01T00:00:00Z",
                   *extra, check=check)


def no_secrets(*procs):
    for proc in procs:
        for secret in (APP_KEY, APP_TOKEN, WEBHOOK_TOKEN):
            assert secret not in proc.stdout and secret not in proc.stderr


def test_add_list_check_sync_and_schedule(instance, vtex):
    added = add_vtex(instance, vtex.server.url, "--trust", "80")
    assert added.stdout.strip() == "source loja_vtex (vtex) added"
    listed = run_cdp(instance, "sources", "list")
    assert listed.stdout.splitlines()[1].split("\t")[:2] == ["loja_vtex", "vtex"]
    as_json = run_cdp(instance, "sources", "list", "--json")
    (view,) = json.loads(as_json.stdout)
    assert view["secrets"] == ["app_key", "app_token"] and view["trust"] == 80
    assert view["config"]["account"] == "lojaexemplo"

    checked = run_cdp(instance, "sources", "check", "loja_vtex")
    assert checked.stdout.startswith("ok: loja_vtex (vtex)")

    synced = run_cdp(instance, "sources", "sync", "loja_vtex")
    assert json.loads(synced.stdout) == {"run": 1, "batches": 2, "accepted": 5, "updated": 0, "duplicate": 0,
                                         "rejected": 0}
    assert "sync loja_vtex" in synced.stderr and "5rec" in synced.stderr.replace(" ", "")  # the tqdm bar
    again = run_cdp(instance, "sources", "sync", "loja_vtex")
    assert json.loads(again.stdout)["accepted"] == 0

    scheduled = run_cdp(instance, "sources", "schedule", "loja_vtex", "--every", "60m")
    assert scheduled.stdout.startswith('loja_vtex: {"every_minutes": 60} via `cdp sources run-due`')
    assert "every 60m" in run_cdp(instance, "sources", "list").stdout
    runs = run_cdp(instance, "sources", "runs", "loja_vtex").stdout.splitlines()
    assert [line.split("\t")[3] for line in runs] == ["ok", "ok"]
    due = run_cdp(instance, "sources", "run-due")  # synced a moment ago: not due
    assert due.stdout == "" and due.returncode == 0
    links = run_cdp(instance, "links").stdout.splitlines()
    assert len([line for line in links if line.startswith("loja_vtex,")]) == 5
    no_secrets(added, listed, as_json, checked, synced, again, scheduled)


def test_secrets_from_a_config_file_and_update(instance, vtex, tmp_path):
    secrets = tmp_path / "vtex.yml"
    secrets.write_text(f"app_key: {APP_KEY}\napp_token: {APP_TOKEN}\nwebhook_token: {WEBHOOK_TOKEN}\n")
    added = run_cdp(instance, "sources", "add", "loja_vtex", "--type", "vtex", "--config-file", str(secrets),
                    "--config", "account=lojaexemplo", "--config", f"base_url={vtex.server.url}")
    updated = run_cdp(instance, "sources", "add", "loja_vtex", "--update", "--config", "statuses=[\"invoiced\"]")
    assert updated.stdout.strip() == "source loja_vtex (vtex) updated"
    (view,) = json.loads(run_cdp(instance, "sources", "list", "--json").stdout)
    assert view["config"]["statuses"] == ["invoiced"] and view["secrets"] == ["app_key", "app_token", "webhook_token"]
    no_secrets(added, updated)


def test_bad_configuration_is_one_line_exit_2_naming_the_field(instance, vtex):
    for args, needle in ((["--config", "account=Loja Exemplo"], "account"),
                         (["--config", "per_page=500"], "per_page"),
                         (["--config", "colour=blue"], "colour"),
                         (["--config", "novalue"], "--config 'novalue'")):
        proc = add_vtex(instance, vtex.server.url, *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        no_secrets(proc)
    assert "loja_vtex" not in run_cdp(instance, "sources", "list").stdout


def test_unknown_type_and_missing_source_exit_2(instance):
    proc = run_cdp(instance, "sources", "add", "loja", "--type", "shopify", check=False)
    assert proc.returncode == 2 and "unknown source type 'shopify'" in proc.stderr
    proc = run_cdp(instance, "sources", "sync", "nada", check=False)
    assert proc.returncode == 2 and "no source nada" in proc.stderr
    proc = run_cdp(instance, "sources", "schedule", "nada", "--every", "1h", "--cron", "0 * * * *", check=False)
    assert proc.returncode == 2 and "one of --every, --cron or --off" in proc.stderr


def test_bad_credentials_exit_2_with_a_clear_line(instance, vtex):
    add_vtex(instance, vtex.server.url)
    run_cdp(instance, "sources", "add", "loja_vtex", "--update", "--config", "app_token=WRONG-TOKEN-00000")
    checked = run_cdp(instance, "sources", "check", "loja_vtex", check=False)
    assert checked.returncode == 2
    assert checked.stderr.strip() == ("error: vtex: credentials rejected (HTTP 401): check app_key/app_token "
                                      "(and the key's OMS permissions)")
    synced = run_cdp(instance, "sources", "sync", "loja_vtex", check=False)
    assert synced.returncode == 2 and "credentials rejected" in synced.stderr and "Traceback" not in synced.stderr
    assert "WRONG-TOKEN-00000" not in checked.stderr + synced.stderr


def test_run_due_syncs_scheduled_sources_in_process(instance, vtex):
    add_vtex(instance, vtex.server.url)
    run_cdp(instance, "sources", "schedule", "loja_vtex", "--cron", "*/5 * * * *")
    due = run_cdp(instance, "sources", "run-due")
    assert json.loads(due.stdout)["accepted"] == 5
    runs = run_cdp(instance, "sources", "runs", "loja_vtex").stdout.splitlines()
    assert runs[0].split("\t")[1] == "schedule"
    off = run_cdp(instance, "sources", "schedule", "loja_vtex", "--off")
    assert off.stdout.strip() == "loja_vtex: no schedule"
