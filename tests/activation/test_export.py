"""File destination: the same gate, holdout and disclosure log as the API."""
from __future__ import annotations

import csv
import json
import stat

import pytest
from sqlalchemy import select

from activation.access import AccessError
from activation.export import FileDestination, export_segment
from cdp.disclosures import Disclosure
from tests.activation.test_members_gate import _setup
from tests.consent.helpers import grant


def test_csv_and_jsonl_exports_follow_the_gate(any_runtime, tmp_path):
    people, sid = _setup(any_runtime)
    by_id = {v: k for k, v in people.items()}
    out = tmp_path / "publico.csv"
    dest = FileDestination({"path": str(out), "format": "csv", "fields": ["email", "purchase_count"]},
                           destination="agencia")
    assert export_segment(any_runtime, sid, "email_marketing", dest, batch_size=3) == 4
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    # p1, p2, p4, p6 consented; purchase counts 3, 1, 5, 0 (fixtures)
    assert {by_id[r["profile_id"]]: (r["email"], r["purchase_count"]) for r in rows} == {
        "p1": ("p1@exemplo.com.br", "3"), "p2": ("p2@exemplo.com.br", "1"), "p4": ("p4@exemplo.com.br", "5"),
        "p6": ("p6@exemplo.com.br", "0")}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with any_runtime.session() as s:
        logged = s.scalars(select(Disclosure).where(Disclosure.recipient_type == "destination")).all()
        assert sorted(by_id[d.profile_id] for d in logged) == ["p1", "p2", "p4", "p6"]
        assert {d.recipient_id for d in logged} == {"file:agencia"}

    grant(any_runtime, people["p2"], action="revoked")
    out2 = tmp_path / "publico.jsonl"
    dest = FileDestination({"path": str(out2), "format": "jsonl", "fields": ["email"]}, destination="agencia")
    assert export_segment(any_runtime, sid, "email_marketing", dest) == 3
    lines = [json.loads(line) for line in out2.read_text(encoding="utf-8").splitlines()]
    assert sorted(by_id[r["profile_id"]] for r in lines) == ["p1", "p4", "p6"]


def test_a_failed_export_leaves_no_file(runtime, tmp_path):
    _, sid = _setup(runtime)
    out = tmp_path / "x.csv"
    dest = FileDestination({"path": str(out), "fields": ["email"]})
    with pytest.raises(AccessError) as err:
        export_segment(runtime, sid, "no_such_purpose", dest)
    assert err.value.field == "purpose"
    assert list(tmp_path.iterdir()) == [tmp_path / "instance"]
