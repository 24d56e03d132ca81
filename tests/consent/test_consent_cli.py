"""`cdp purposes`, `cdp ledger` and `cdp consent` as a user runs them (real
subprocesses, real SQLite file)."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest


def cdp(instance, *args, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CDP_KEYRING")}
    env["CDP_INSTANCE_PATH"] = str(instance)
    proc = subprocess.run([sys.executable, "-m", "cdp.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cdp {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def instance(tmp_path):
    path = tmp_path / "instance"
    assert "purposes: 5 default(s) added" in cdp(path, "init").stdout
    return path


def test_init_seeds_purposes_once_and_purposes_commands(instance):
    assert "purposes: 0 default(s) added" in cdp(instance, "init").stdout
    listing = cdp(instance, "purposes", "list").stdout
    assert "email_marketing\tv1\tconsent\tgrant" in listing and "analytics\tv1\tlegitimate_interest" in listing
    added = cdp(instance, "purposes", "add", "partner_offers", "--legal-basis", "consent",
                "--title-pt", "Ofertas de parceiros", "--title-en", "Partner offers",
                "--description-pt", "Compartilhar com a Parceira Ltda.", "--description-en", "Share with Parceira Ltda.",
                "--retention-days", "365", "--notice-version", "aviso-p1", "--recipient", "Parceira Ltda.")
    assert json.loads(added.stdout)["recipients"] == ["Parceira Ltda."]
    bad = cdp(instance, "purposes", "add", "no_basis", "--title-pt", "x", "--title-en", "x", "--description-pt", "x",
              "--description-en", "x", "--retention-days", "1", "--notice-version", "n1", check=False)
    assert bad.returncode == 2 and "--legal-basis" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    sensitive = cdp(instance, "purposes", "add", "saude", "--legal-basis", "legitimate_interest", "--sensitive",
                    "--title-pt", "x", "--title-en", "x", "--description-pt", "x", "--description-en", "x",
                    "--retention-days", "1", "--notice-version", "n1", check=False)
    assert sensitive.returncode == 2 and "Art. 11" in sensitive.stderr
    updated = cdp(instance, "purposes", "update", "partner_offers", "--recipient", "Parceira Ltda.",
                  "--recipient", "Outra S.A.")
    assert "new version 2" in updated.stderr and json.loads(updated.stdout)["version"] == 2
    missing = cdp(instance, "purposes", "update", "nope", "--title-en", "x", check=False)
    assert missing.returncode == 2 and "no purpose nope" in missing.stderr


def test_consent_from_a_file_then_history_receipt_checkpoint_and_tampering(instance, tmp_path):
    records = tmp_path / "leads.jsonl"
    records.write_text(json.dumps({
        "source": "formularios", "external_id": "L-1", "identifiers": {"email": "leda@example.com"},
        "consents": [{"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
                      "occurred_at": "2026-01-02T10:00:00-03:00",
                      "evidence": {"channel": "web_form", "notice_version": "aviso-2026-01", "ip": "187.4.5.6"}}],
    }) + "\n", encoding="utf-8")
    cdp(instance, "ingest", "jsonl", str(records))
    pid = cdp(instance, "links").stdout.strip().splitlines()[1].split(",")[2]

    history = json.loads(cdp(instance, "consent", "history", pid).stdout)
    assert history["history"][0]["evidence"] == {"ip": "187.4.5.6"}
    assert {s["purpose"]: s["allowed"] for s in history["states"]}["email_marketing"] is True
    receipt = json.loads(cdp(instance, "consent", "receipt", pid, "--lang", "en").stdout)
    assert receipt["receipt"]["piiPrincipalId"] == pid and receipt["jws"].count(".") == 2
    assert cdp(instance, "consent", "receipt", "nobody", check=False).returncode == 2
    assert "appended 0" in cdp(instance, "consent", "backfill").stdout  # already there: idempotent
    assert "rebuilt 1" in cdp(instance, "ledger", "rebuild").stdout

    cp = tmp_path / "checkpoint.json"
    assert "checkpoint at entry 1" in cdp(instance, "ledger", "checkpoint", "--out", str(cp)).stdout
    assert json.loads(cp.read_text())["public_key"]
    assert "matches checkpoint at 1" in cdp(instance, "ledger", "verify", "--checkpoint", str(cp)).stdout
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    bad = cdp(instance, "ledger", "verify", "--checkpoint", str(junk), check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

    db = sqlite3.connect(instance / "cdp.sqlite3")
    db.execute("DROP TRIGGER consent_ledger_no_update")
    db.execute("UPDATE consent_ledger SET action = 'revoked' WHERE seq = 1")
    db.commit()
    db.close()
    failed = cdp(instance, "ledger", "verify", check=False)
    assert failed.returncode == 1 and "FAILED at entry 1: hash_mismatch" in failed.stderr
    assert cdp(instance, "ledger", "checkpoint", "--out", str(tmp_path / "x.json"), check=False).returncode == 2
