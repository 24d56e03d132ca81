"""No personal data in clear at rest: run the real `cdp demo`, then scan
what it stored (the SQLite files, or a pg_dump of the PostgreSQL database)
for every name, e-mail, phone and CPF the generator wrote; and what it
printed and logged (verbose), its connectors' syncs and webhooks included."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from cdp.demo.dataset import generate
from identity.normalize import NormalizationError, normalize_email, normalize_name, normalize_phone

SEED = 3
MIN_NAME = 8  # shorter names ("Ana Luz") could occur by chance in other text


def _cdp_command() -> list[str]:
    script = Path(sys.executable).parent / "cdp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdp.cli"]


def _run_demo(instance: Path, people: int, database_url: str | None = None,
              verbose: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDP_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["CDP_INSTANCE_PATH"] = str(instance)
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run(_cdp_command() + ["-v"] * verbose + ["demo", "--no-serve", "--people", str(people), "--seed", str(SEED)],
                          env=env, capture_output=True, text=True, timeout=600)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _needles(known_pii: dict[str, set[str]]) -> dict[bytes, str]:
    """Byte strings to look for, each mapped to its kind (for the failure message)."""
    needles: dict[bytes, str] = {}

    def add(kind: str, value: str | None) -> None:
        if value and value.strip():
            needles[value.strip().encode("utf-8")] = kind

    for email in known_pii["emails"]:
        add("email", email)
        add("email", email.strip().lower())
        try:
            add("email", normalize_email(email).value)
        except NormalizationError:
            pass
    for cpf in known_pii["cpfs"]:
        add("cpf", cpf)  # as written: formatted or 11 digits
        digits = "".join(c for c in cpf if c.isdigit())
        add("cpf", digits.zfill(11))
        add("cpf", f"{digits.zfill(11)[:3]}.{digits.zfill(11)[3:6]}.{digits.zfill(11)[6:9]}-{digits.zfill(11)[9:]}")
    for phone in known_pii["phones"]:
        add("phone", phone)
        try:
            normalized = normalize_phone(phone)
        except NormalizationError:
            normalized = None
        if normalized is not None:
            add("phone", normalized.value)  # E.164
    for name in known_pii["names"]:
        if len(name.strip()) < MIN_NAME:
            continue
        add("name", name)
        add("name", _strip_accents(name).lower())
        forms = normalize_name(name)
        if forms is not None and len(forms.match) >= MIN_NAME:
            add("name", forms.match)
    return needles


def _hits(blob: bytes, needles: dict[bytes, str]) -> list[tuple[str, str]]:
    return sorted((kind, needle.decode("utf-8")) for needle, kind in needles.items() if needle in blob)


def _unhex_bytea(dump: bytes) -> bytes:
    """pg_dump writes bytea as hex (\\x0a1b...). Ciphertext in hex can spell
    a short digit string (a phone's 8 digits) by chance, and plaintext stored
    as bytea would be hidden by the hex: scan the decoded bytes instead."""
    return re.sub(rb"\\{1,2}x((?:[0-9a-f]{2})+)", lambda m: bytes.fromhex(m.group(1).decode()), dump)


def _same_files(a: Path, b: Path) -> None:
    """Same seed, same data: the regenerated PII list is the demo's."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _summary_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for prefix in ("records in:", "profiles out:", "time:"):
        assert any(line.startswith(prefix) for line in lines), f"no {prefix!r} line in:\n{result.stdout}"


def test_demo_sqlite_files_hold_no_plaintext_pii(tmp_path):
    instance = tmp_path / "instance"
    result = _run_demo(instance, people=120, verbose=True)  # INFO logs too: syncs, webhooks, token refresh
    _summary_ok(result)

    regenerated = generate(tmp_path / "regenerated", people=120, seed=SEED)
    _same_files(regenerated.directory, instance / "demo")
    known = regenerated.known_pii
    needles = _needles(known)
    assert {"email", "cpf", "phone", "name"} <= set(needles.values())
    # The scan can find PII: the demo's own input files are full of it.
    inputs = b"".join(p.read_bytes() for p in sorted((instance / "demo").iterdir()))
    assert len(_hits(inputs, needles)) > len(needles) // 2

    # What the demo printed and logged (its connectors' fixture servers and webhooks included) names no one.
    assert "sync source=erp_bling" in result.stderr  # the logs were really on
    assert _hits((result.stdout + result.stderr).encode("utf-8"), needles) == []

    stored = [p for p in sorted(instance.iterdir()) if p.is_file() and p.name != "keys.json"]
    assert instance / "cdp.sqlite3" in stored
    hits = {p.name: _hits(p.read_bytes(), needles) for p in stored}
    assert all(not h for h in hits.values()), {name: h[:20] for name, h in hits.items() if h}

    # Fold any write-ahead log into the main file and scan it once more.
    with sqlite3.connect(instance / "cdp.sqlite3") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        records = conn.execute("SELECT count(*) FROM source_records").fetchone()[0]
    assert records > 120  # the database really holds the demo's records
    assert _hits((instance / "cdp.sqlite3").read_bytes(), needles) == []


def test_demo_postgresql_dump_holds_no_plaintext_pii(tmp_path, pg_database):
    instance = tmp_path / "instance"
    result = _run_demo(instance, people=80, database_url=pg_database)
    _summary_ok(result)
    assert not (instance / "cdp.sqlite3").exists()  # everything went to PostgreSQL

    regenerated = generate(tmp_path / "regenerated", people=80, seed=SEED)
    _same_files(regenerated.directory, instance / "demo")
    known = regenerated.known_pii
    needles = _needles(known)
    inputs = b"".join(p.read_bytes() for p in sorted((instance / "demo").iterdir()))
    assert len(_hits(inputs, needles)) > len(needles) // 2

    for extra in (["--data-only"], []):
        dump = subprocess.run(["pg_dump", *extra, "--no-owner", f"--dbname={pg_database}"],
                              capture_output=True, timeout=300)
        assert dump.returncode == 0, dump.stderr.decode(errors="replace")
        assert b"COPY public.source_records" in dump.stdout  # the data is in the dump
        hits = _hits(_unhex_bytea(dump.stdout), needles)
        assert hits == [], f"pg_dump {' '.join(extra) or '(full)'}: {hits[:20]}"


@pytest.mark.parametrize("value", ["Maria Eduarda da Silva", "390.533.447-05", "+5511987654321"])
def test_scan_catches_a_planted_value(value):
    needles = _needles({"names": {"Maria Eduarda da Silva"}, "emails": set(),
                        "phones": {"(11) 98765-4321"}, "cpfs": {"390.533.447-05"}})
    assert _hits(b"\x00\x01 " + value.encode("utf-8") + b" \xff", needles)
