"""Portfolios on the hand-computed base of tests/activation/fixtures.py
(NOW = 2026-07-01, churn after 180 days), on SQLite and PostgreSQL.

Per person (tests/activation/test_metrics.py checks each number):
    LTV     p1 231.12  p2 19.26  p3 77.04  p4 385.21  p5 15.41  p6 — (no purchase)
    churned p1 no      p2 no     p3 yes    p4 no      p5 yes    p6 — (NULL)
    NPS     p1 10 P    p2 8 N    p3 6 D    p4 9 P     p5 —      p6 9 P
    recency p1 30      p2 10     p3 365    p4 122     p5 209    p6 —
"""
from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from activation.metrics import refresh_all
from activation.portfolio_models import Portfolio, PortfolioSnapshot
from activation.portfolios import (MEMBER_METRICS, PortfolioConflict, PortfolioError, add_members, assign_manager,
                                   create_portfolio, decode_cursor, history, member_count, members_page,
                                   remove_members, take_snapshots)
from activation.segments import create_segment, refresh_members, update_segment
from cdp.console.staff import add_staff
from tests.activation.fixtures import NOW, load_people
from tests.services.test_rq import queue_name, rq_runtime, worker_env  # noqa: F401 - fixtures

DAY1, DAY2 = date(2026, 7, 1), date(2026, 7, 2)
RECENT = {"metric": "recency_days", "op": "lte", "value": 150}  # p1, p2, p4
CHURNED = {"metric": "churned", "op": "eq", "value": True}  # p3, p5


def _staff(runtime, name: str) -> str:
    return add_staff(runtime, f"{name}@empresa.com.br", "analyst", "uma-senha-bem-longa")


@pytest.fixture
def base(any_runtime):
    people = load_people(any_runtime)
    refresh_all(any_runtime, churn_days=180, now=NOW)
    return any_runtime, people, _staff(any_runtime, "ana"), _staff(any_runtime, "bruno")


def _snap(session, portfolio_id: int, day: date) -> dict:
    s = session.scalar(select(PortfolioSnapshot).where(PortfolioSnapshot.portfolio_id == portfolio_id,
                                                       PortfolioSnapshot.as_of == day))
    return {"size": s.size, "customers": s.customers, "total_ltv": Decimal(s.total_ltv).quantize(Decimal("0.01")),
            "avg_ltv": None if s.avg_ltv is None else Decimal(s.avg_ltv).quantize(Decimal("0.01")),
            "churned": s.churned, "churn_rate": s.churn_rate, "nps_respondents": s.nps_respondents,
            "promoters": s.promoters, "detractors": s.detractors, "nps": s.nps, "manager_id": s.manager_id}


def test_snapshots_history_managers_and_segment_following(base):
    rt, p, ana, bruno = base
    with rt.session() as s:
        south = create_portfolio(s, "Carteira Sul", ana, description="contas do sul")
        assert add_members(s, south, [p["p1"], p["p3"], p["p6"]]) == {"added": 3, "already_members": 0}
        seg = create_segment(s, "recentes", RECENT)
        refresh_members(s, seg, now=NOW)
        ruled = create_portfolio(s, "Recentes", bruno, segment_id=seg.id)
        assert (south.kind, ruled.kind, member_count(s, ruled)) == ("manual", "segment", 3)
        assert take_snapshots(s, DAY1) == 2
        south_id, ruled_id, seg_id = south.id, ruled.id, seg.id

    with rt.session() as s:
        # South: p1, p3, p6. Customers p1, p3: total 231.12 + 77.04 = 308.16, avg 154.08;
        # churned p3 of the 2 flagged = 50 %; NPS P, D, P over 3 answers = (2 - 1) / 3 = 33.33
        assert _snap(s, south_id, DAY1) == {
            "size": 3, "customers": 2, "total_ltv": Decimal("308.16"), "avg_ltv": Decimal("154.08"), "churned": 1,
            "churn_rate": 50.0, "nps_respondents": 3, "promoters": 2, "detractors": 1, "nps": 33.33,
            "manager_id": ana}
        # Recentes: p1, p2, p4. 231.12 + 19.26 + 385.21 = 635.59, avg 211.863 -> 211.86; none churned;
        # NPS P, N, P = (2 - 0) / 3 = 66.67
        assert _snap(s, ruled_id, DAY1) == {
            "size": 3, "customers": 3, "total_ltv": Decimal("635.59"), "avg_ltv": Decimal("211.86"), "churned": 0,
            "churn_rate": 0.0, "nps_respondents": 3, "promoters": 2, "detractors": 0, "nps": 66.67,
            "manager_id": bruno}

    with rt.session() as s:
        south, ruled, seg = s.get(Portfolio, south_id), s.get(Portfolio, ruled_id), None
        # day 2: p3 leaves South, p5 joins; South passes to Bruno
        assert remove_members(s, south, [p["p3"], p["p2"]]) == {"removed": 1, "not_members": 1}
        add_members(s, south, [p["p5"]])
        assign_manager(s, south, bruno, actor="test")
        # the segment's rules change: until the refresh, the portfolio keeps the materialized members
        from activation.models import Segment

        seg = s.get(Segment, seg_id)
        update_segment(s, seg, rules=CHURNED)
        assert member_count(s, ruled) == 3
        assert refresh_members(s, seg, now=NOW) == {"entered": 2, "exited": 3}
        assert member_count(s, ruled) == 2
        take_snapshots(s, DAY2)
        take_snapshots(s, DAY2)  # idempotent per day: replaces, never duplicates

    with rt.session() as s:
        # South: p1, p5, p6. 231.12 + 15.41 = 246.53, avg 123.265 -> 123.27 (half up); churned p5 of 2 = 50 %;
        # NPS: p1 P, p6 P (p5 never answered) = 100
        assert _snap(s, south_id, DAY2) == {
            "size": 3, "customers": 2, "total_ltv": Decimal("246.53"), "avg_ltv": Decimal("123.27"), "churned": 1,
            "churn_rate": 50.0, "nps_respondents": 2, "promoters": 2, "detractors": 0, "nps": 100.0,
            "manager_id": bruno}
        # Recentes now follows "churned": p3, p5. 77.04 + 15.41 = 92.45, avg 46.225 -> 46.23; churn 100 %;
        # NPS: p3 D of 1 answer = -100
        assert _snap(s, ruled_id, DAY2) == {
            "size": 2, "customers": 2, "total_ltv": Decimal("92.45"), "avg_ltv": Decimal("46.23"), "churned": 2,
            "churn_rate": 100.0, "nps_respondents": 1, "promoters": 0, "detractors": 1, "nps": -100.0,
            "manager_id": bruno}
        series = history(s, south_id)
        assert [(h["as_of"], h["size"], h["total_ltv"], h["manager_id"]) for h in series] == [
            ("2026-07-01", 3, "308.16", ana), ("2026-07-02", 3, "246.53", bruno)]
        assert [h["as_of"] for h in history(s, south_id, start=DAY2)] == ["2026-07-02"]
        assert s.scalar(select(func.count()).select_from(PortfolioSnapshot)) == 4
        from activation.portfolios import manager_history

        managers = manager_history(s, south_id)
        assert [(m["manager_id"], m["unassigned_at"] is None, m["assigned_by"]) for m in managers] == [
            (ana, False, "system"), (bruno, True, "test")]


def test_one_manual_portfolio_per_customer_and_bad_input(base):
    rt, p, ana, bruno = base
    with rt.session() as s:
        north = create_portfolio(s, "Norte", ana)
        south = create_portfolio(s, "Sul", bruno)
        add_members(s, north, [p["p1"], p["p2"]])
        assert add_members(s, north, [p["p1"]]) == {"added": 0, "already_members": 1}  # same portfolio: no-op
        with pytest.raises(PortfolioConflict) as err:
            add_members(s, south, [p["p4"], p["p2"]])
        assert (err.value.status, err.value.field, err.value.conflicts) == (409, "profile_ids", {p["p2"]: north.id})
        assert member_count(s, south) == 0  # nothing added: all or nothing
        remove_members(s, north, [p["p2"]])
        assert add_members(s, south, [p["p2"], p["p4"]]) == {"added": 2, "already_members": 0}  # moved explicitly

        seg = create_segment(s, "todos", {"metric": "purchase_count", "op": "gte", "value": 0})
        refresh_members(s, seg, now=NOW)
        ruled = create_portfolio(s, "Regra", ana, segment_id=seg.id)
        assert member_count(s, ruled) == 6  # rule-based portfolios may overlap with manual ones
        for call, field in [
            (lambda: add_members(s, ruled, [p["p5"]]), "kind"),
            (lambda: add_members(s, north, ["nao-existe"]), "profile_ids"),
            (lambda: add_members(s, north, []), "profile_ids"),
            (lambda: create_portfolio(s, "Norte", ana), "name"),
            (lambda: create_portfolio(s, "Outra", "nao-existe"), "manager_id"),
            (lambda: create_portfolio(s, "Outra", ana, segment_id=999), "segment_id"),
            (lambda: create_portfolio(s, "", ana), "name"),
            (lambda: assign_manager(s, north, "nao-existe"), "manager_id"),
            (lambda: decode_cursor(north.id, "bad!"), "cursor"),
        ]:
            with pytest.raises(PortfolioError) as err:
                call()
            assert err.value.field == field


def test_member_pages_are_keyset_and_hold_no_personal_data(base):
    rt, p, ana, _ = base
    with rt.session() as s:
        north = create_portfolio(s, "Norte", ana)
        add_members(s, north, [p[n] for n in ("p1", "p2", "p3", "p4", "p5")])
        seen, cursor = [], None
        while True:
            items, next_cursor = members_page(s, north, decode_cursor(north.id, cursor), limit=2)
            seen += items
            if next_cursor is None:
                break
            cursor = next_cursor
        assert [i["profile_id"] for i in seen] == sorted(p[n] for n in ("p1", "p2", "p3", "p4", "p5"))
        assert all(set(i) == {"profile_id", *MEMBER_METRICS} for i in seen)
        by_id = {i["profile_id"]: i for i in seen}
        assert (by_id[p["p4"]]["ltv"], by_id[p["p3"]]["churned"], by_id[p["p1"]]["nps_class"]) == (
            "385.21", True, "promoter")
        other = create_portfolio(s, "Outra", ana)
        with pytest.raises(PortfolioError) as err:
            decode_cursor(other.id, cursor)  # a cursor of another portfolio
        assert err.value.field == "cursor"


def test_migration_matches_the_models_and_downgrades(tmp_path, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from cdp import migrate
    from cdp.models import Base
    from cdp.store import get_engine
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "mig", backend)
    migrate.upgrade(settings, "0007")
    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "portfolio" in repr(d)] == []
    migrate.downgrade(settings, "0006")
    with engine.connect() as conn:
        assert not [t for t in inspect(conn).get_table_names() if t.startswith("portfolio")]
    migrate.upgrade(settings, "head")


# -- API ----------------------------------------------------------------------------------------

def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_api(runtime, client, api_key):
    people = load_people(runtime)
    refresh_all(runtime, churn_days=180, now=NOW)
    ana, bruno = _staff(runtime, "ana"), _staff(runtime, "bruno")
    reader, writer = api_key("portfolios:read"), api_key("portfolios:read", "portfolios:write")
    assert client.get("/api/v1/portfolios").status_code == 401
    assert client.get("/api/v1/portfolios", headers=_auth(api_key("segments:read"))).status_code == 403
    assert client.post("/api/v1/portfolios", json={"name": "Sul", "manager_id": ana},
                       headers=_auth(reader)).status_code == 403

    missing = client.post("/api/v1/portfolios", json={"name": "Sul"}, headers=_auth(writer))
    assert missing.status_code == 422 and missing.content_type == "application/problem+json"
    assert "manager_id" in missing.json["errors"]
    unknown = client.post("/api/v1/portfolios", json={"name": "Sul", "manager_id": "nao-existe"},
                          headers=_auth(writer))
    assert unknown.status_code == 422 and unknown.json["field"] == "manager_id"
    extra = client.post("/api/v1/portfolios", json={"name": "Sul", "manager_id": ana, "cor": "azul"},
                        headers=_auth(writer))
    assert extra.status_code == 422 and "cor" in extra.json["errors"]

    made = client.post("/api/v1/portfolios", json={"name": "Sul", "manager_id": ana}, headers=_auth(writer))
    assert made.status_code == 201 and made.json["kind"] == "manual" and made.json["managers"][0]["manager_id"] == ana
    pid = made.json["id"]
    other = client.post("/api/v1/portfolios", json={"name": "Norte", "manager_id": bruno}, headers=_auth(writer)).json
    assert client.post("/api/v1/portfolios", json={"name": "Sul", "manager_id": ana},
                       headers=_auth(writer)).status_code == 409

    added = client.post(f"/api/v1/portfolios/{pid}/members", json={"profile_ids": [people["p1"], people["p3"]]},
                        headers=_auth(writer))
    assert added.status_code == 200 and added.json == {"added": 2, "already_members": 0}
    clash = client.post(f"/api/v1/portfolios/{other['id']}/members", json={"profile_ids": [people["p3"]]},
                        headers=_auth(writer))
    assert clash.status_code == 409 and clash.json["field"] == "profile_ids"
    assert people["p3"] in clash.json["detail"] and f"portfolio {pid}" in clash.json["detail"]
    bad_ids = client.post(f"/api/v1/portfolios/{pid}/members", json={"profile_ids": "p1"}, headers=_auth(writer))
    assert bad_ids.status_code == 422 and "profile_ids" in bad_ids.json["errors"]

    page = client.get(f"/api/v1/portfolios/{pid}/members?limit=1", headers=_auth(reader)).json
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = client.get(f"/api/v1/portfolios/{pid}/members?limit=1&cursor={page['next_cursor']}",
                      headers=_auth(reader)).json
    assert {page["items"][0]["profile_id"], rest["items"][0]["profile_id"]} == {people["p1"], people["p3"]}
    assert rest["next_cursor"] is None and "email" not in rest["items"][0]
    wrong = client.get(f"/api/v1/portfolios/{other['id']}/members?cursor={page['next_cursor']}", headers=_auth(reader))
    assert wrong.status_code == 422 and wrong.json["field"] == "cursor"

    assert client.put(f"/api/v1/portfolios/{pid}/manager", json={"manager_id": "x"},
                      headers=_auth(writer)).json["field"] == "manager_id"
    moved = client.put(f"/api/v1/portfolios/{pid}/manager", json={"manager_id": bruno}, headers=_auth(writer)).json
    assert [m["manager_id"] for m in moved["managers"]] == [ana, bruno] and moved["manager_id"] == bruno
    renamed = client.patch(f"/api/v1/portfolios/{pid}", json={"description": "contas do sul"}, headers=_auth(writer))
    assert renamed.status_code == 200 and renamed.json["description"] == "contas do sul"

    snap = client.post("/api/v1/portfolios/snapshots", headers=_auth(writer))
    assert snap.status_code == 200 and snap.json["snapshots"] == 2
    series = client.get(f"/api/v1/portfolios/{pid}/snapshots", headers=_auth(reader)).json["snapshots"]
    # p1 + p3: 308.16, avg 154.08, p3 churned (50 %), NPS P + D = 0
    assert [(s["size"], s["total_ltv"], s["avg_ltv"], s["churn_rate"], s["nps"]) for s in series] == [
        (2, "308.16", "154.08", 50.0, 0.0)]
    bad_range = client.get(f"/api/v1/portfolios/{pid}/snapshots?from=2026-07-02&to=2026-07-01", headers=_auth(reader))
    assert bad_range.status_code == 422 and "to" in bad_range.json["errors"]
    listed = client.get("/api/v1/portfolios", headers=_auth(reader)).json["portfolios"]
    assert [(x["name"], x["members"], x["latest_snapshot"]["size"]) for x in listed] == [("Norte", 0, 0), ("Sul", 2, 2)]
    assert client.get("/api/v1/portfolios/999", headers=_auth(reader)).status_code == 404
    removed = client.post(f"/api/v1/portfolios/{pid}/members/remove", json={"profile_ids": [people["p3"]]},
                          headers=_auth(writer))
    assert removed.json == {"removed": 1, "not_members": 0}


# -- CLI ----------------------------------------------------------------------------------------

def test_cli(runtime):
    from cdp.cli import cli

    people = load_people(runtime)
    refresh_all(runtime, churn_days=180, now=NOW)
    ana, bruno = _staff(runtime, "ana"), _staff(runtime, "bruno")
    env = {"CDP_INSTANCE_PATH": str(runtime.settings.instance_path), "DATABASE_URL": runtime.settings.database_url,
           "REDIS_URL": "", "CDP_KEYRING": ""}
    runner = CliRunner()

    def cdp(*args, code=0):
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.stderr if code == 0 else "")
        return result

    token = cdp("apikey", "create", "--name", "crm", "--scopes", "portfolios:read,portfolios:write").stdout
    assert token.startswith("cdp_")
    bad_scope = cdp("apikey", "create", "--name", "crm2", "--scopes", "portfolios:admin", code=2)
    assert "portfolios:read" in bad_scope.stderr

    made = json.loads(cdp("portfolios", "create", "Sul", "--manager", ana, "--description", "sul").stdout)
    sid = made["id"]
    json.loads(cdp("portfolios", "create", "Norte", "--manager", bruno).stdout)
    assert json.loads(cdp("portfolios", "add", str(sid), people["p1"], people["p4"]).stdout) == {
        "added": 2, "already_members": 0}
    clash = cdp("portfolios", "add", str(sid + 1), people["p4"], code=2)
    assert clash.stderr.count("\n") == 1 and clash.stderr.startswith("error: profile_ids:")
    assert "manager_id" in cdp("portfolios", "create", "X", "--manager", "ninguem", code=2).stderr
    assert "no portfolio 99" in cdp("portfolios", "show", "99", code=2).stderr
    assert json.loads(cdp("portfolios", "remove", str(sid), people["p4"]).stdout) == {"removed": 1, "not_members": 0}
    assigned = json.loads(cdp("portfolios", "assign", str(sid), "--manager", bruno).stdout)
    assert [m["manager_id"] for m in assigned["managers"]] == [ana, bruno]
    assert json.loads(cdp("portfolios", "snapshot").stdout)["snapshots"] == 2
    shown = json.loads(cdp("portfolios", "show", str(sid), "--history").stdout)
    # p1 alone: LTV 231.12, not churned, a promoter
    assert [(h["size"], h["total_ltv"], h["avg_ltv"], h["churn_rate"], h["nps"]) for h in shown["snapshots"]] == [
        (1, "231.12", "231.12", 0.0, 100.0)]
    listed = json.loads(cdp("portfolios", "list").stdout)
    assert [(x["name"], x["manager_id"], x["members"]) for x in listed] == [("Norte", bruno, 0), ("Sul", bruno, 1)]


# -- rq -----------------------------------------------------------------------------------------

def test_snapshot_runs_on_the_worker(rq_runtime, worker_env):
    from rq.job import Job

    from activation.portfolios import submit_snapshot
    from cdp import jobs
    from tests.services.test_rq import _burst

    worker_env(rq_runtime.settings.instance_path)
    ana = _staff(rq_runtime, "ana")
    with rq_runtime.session() as s:
        create_portfolio(s, "Sul", ana)
    queued = submit_snapshot(rq_runtime)
    job = Job.fetch(queued["job_id"], connection=jobs.queue(rq_runtime).connection)
    assert len(job.args) == 1 and date.fromisoformat(job.args[0])  # a date only: no personal data
    with rq_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(PortfolioSnapshot)) == 0  # not before the worker
    _burst(rq_runtime, "portfolios")
    with rq_runtime.session() as s:
        assert s.scalars(select(PortfolioSnapshot.size)).all() == [0]


# -- console ------------------------------------------------------------------------------------

def test_console_page_in_both_languages(runtime, client):
    from tests.console.conftest import PASSWORD, login

    people = load_people(runtime)
    refresh_all(runtime, churn_days=180, now=NOW)
    manager = add_staff(runtime, "gerente@empresa.com.br", "analyst", PASSWORD)
    with runtime.session() as s:
        south = create_portfolio(s, "Carteira Sul", manager)
        add_members(s, south, [people["p1"], people["p3"]])
        take_snapshots(s, DAY1)
    assert client.get("/console/portfolios").status_code == 302  # signed-in staff only
    assert login(client, "gerente@empresa.com.br").status_code == 303
    page = client.get("/console/portfolios").get_data(as_text=True)
    # p1 + p3: total 308.16, average 154.08, churn 50 %, NPS (1 - 1) / 2 = 0
    assert "Carteiras de clientes" in page and "Carteira Sul" in page and manager[:8] in page
    assert all(v in page for v in ("308.16", "154.08", "50.0", "0.0", "2026-07-01"))
    client.get("/console/lang/en")
    assert "Customer portfolios" in client.get("/console/portfolios").get_data(as_text=True)
