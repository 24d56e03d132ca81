"""`cdp dsr` and `cdp incidents` as an operator runs them (real subprocesses)."""
from __future__ import annotations

import json

import pytest

from tests.test_cli import run_cdp, write_jsonl
from tests.dsr.conftest import VICTIM


@pytest.fixture
def instance(tmp_path):
    path = tmp_path / "instance"
    run_cdp(path, "init")
    return path


def test_staff_erasure_from_the_command_line(instance, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", [{"source": "crm", "external_id": "C1", "identifiers": {
        "cpf": VICTIM["cpf"], "email": VICTIM["email"]}, "traits": {"full_name": VICTIM["name"]}}])
    run_cdp(instance, "ingest", "jsonl", str(data))
    profile_id = run_cdp(instance, "links").stdout.strip().splitlines()[1].split(",")[2]

    request_id = run_cdp(instance, "dsr", "open", "--type", "deletion", "--cpf", VICTIM["cpf"]).stdout.strip()
    refused = run_cdp(instance, "dsr", "execute", request_id, check=False)
    assert refused.returncode == 2 and "verify the identity first" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    verified = run_cdp(instance, "dsr", "verify", request_id, "--profiles", profile_id,
                       "--note", "RG conferido presencialmente", "--actor", "ana.dpo")
    assert "status=identity_verified profiles=1" in verified.stdout
    executed = run_cdp(instance, "dsr", "execute", request_id)
    assert "status=in_progress outcome=awaiting_systems open_systems=1" in executed.stdout
    assert "in_progress" in run_cdp(instance, "dsr", "list").stdout
    done = run_cdp(instance, "dsr", "confirm", request_id, "source:crm", "--note", "apagado no CRM")
    assert "status=completed open_systems=0" in done.stdout

    shown = json.loads(run_cdp(instance, "dsr", "show", request_id).stdout)
    assert shown["status"] == "completed" and shown["audit"][1]["actor"] == "cli:ana.dpo"
    assert VICTIM["email"] not in json.dumps(shown)
    totals = json.loads(run_cdp(instance, "dsr", "reapply-erasures").stdout)
    assert totals["entries"] == 1 and totals["refused_lines"] == 0
    again = run_cdp(instance, "ingest", "jsonl", str(data))
    assert json.loads(again.stdout.strip().splitlines()[-1])["suppressed"] == 1


def test_bad_input_is_one_line_and_exit_2(instance):
    request_id = run_cdp(instance, "dsr", "open", "--type", "access", "--email", "a@example.com").stdout.strip()
    for args, needle in [
        (("dsr", "open", "--type", "access", "--cpf", "529.982.247-24"), "identifiers.cpf"),
        (("dsr", "open", "--type", "horoscope", "--email", "a@example.com"), "type"),
        (("dsr", "extend", request_id, "--days", "3", "--reason", " "), "reason"),
        (("dsr", "deny", request_id, "--reason-code", "nope"), "reason_code"),
        (("dsr", "show", "not-a-request"), "no such request"),
        (("incidents", "create", "--title", "x", "--detected-at", "ontem"), "--detected-at"),
    ]:
        proc = run_cdp(instance, *args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_incident_from_the_command_line(instance):
    created = run_cdp(instance, "incidents", "create", "--title", "Planilha enviada ao destinatário errado",
                      "--detected-at", "2026-11-19T10:00:00", "--category", "contact", "--category", "documents")
    incident_id, due = created.stdout.strip().split("\t")
    assert due == "notify ANPD by 2026-11-25"
    run_cdp(instance, "incidents", "decide", incident_id, "--decision", "notify", "--reason", "CPF exposto")
    run_cdp(instance, "incidents", "notified", incident_id, "--anpd")
    form = json.loads(run_cdp(instance, "incidents", "export", incident_id).stdout)
    assert form["categorias_de_dados"] == ["contact", "documents"] and form["comunicado_anpd_em"]
    assert incident_id in run_cdp(instance, "incidents", "list").stdout
