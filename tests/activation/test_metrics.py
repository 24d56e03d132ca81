"""Metrics against numbers computed by hand (NOW = 2026-07-01, churn after 180 days)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from activation.metrics import company_metrics, refresh_all
from activation.models import ProfileMetrics
from cdp.config import ConfigError
from cdp.ingest import ingest_batch
from cdp.models import SourceRecord
from tests.activation.fixtures import NOW, buy, load_people
from tests.factories import record


@pytest.fixture
def base(any_runtime):
    people = load_people(any_runtime)
    assert len(set(people.values())) == 6
    refresh_all(any_runtime, batch_size=4, churn_days=180, now=NOW)  # batch 4: two batches of six profiles
    with any_runtime.session() as s:
        rows = {name: s.get(ProfileMetrics, pid) for name, pid in people.items()}
    return any_runtime, people, rows


def test_purchase_metrics_rfm_ltv_and_churn_match_hand_computation(base):
    _, _, m = base
    p1 = m["p1"]
    # p1: 100 + 200 + 300 = 600 over 3 purchases; AOV 600 / 3 = 200
    assert (p1.purchase_count, p1.monetary_total, p1.average_order_value) == (3, Decimal("600.00"), Decimal("200.00"))
    # 2025-07-01 -> 2026-06-01: 31+31+30+31+30+31+31+28+31+30+31 = 335 days; recency 2026-06-01 -> 07-01 = 30
    assert (p1.lifetime_days, p1.recency_days) == (335, 30)
    # frequency per year: 3 purchases * 365 / max(335, 365) = 3.0
    assert p1.purchase_frequency == pytest.approx(3.0)
    # p3: 2024-07-01 -> 2025-07-01 = 365 days; 2 * 365 / 365 = 2.0; recency 365 >= 180 -> churned
    assert (m["p3"].lifetime_days, m["p3"].recency_days, m["p3"].churned) == (365, 365, True)
    assert m["p3"].purchase_frequency == pytest.approx(2.0)
    # p5: last purchase 2025-12-04 -> 2026-01-01 = 28 days, + 31+28+31+30+31+30 = 209 days -> churned
    assert (m["p5"].recency_days, m["p5"].lifetime_days, m["p5"].churned) == (209, 3, True)
    # p4: 122 days (31+30+31+30), not churned; p2: 10 days
    assert (m["p4"].recency_days, m["p4"].churned, m["p2"].recency_days, m["p2"].churned) == (122, False, 10, False)
    # p6 never bought: no purchase metrics, no churn flag, no scores
    assert (m["p6"].purchase_count, m["p6"].churned, m["p6"].r_score, m["p6"].ltv) == (0, None, None, None)

    # RFM quintiles over the 5 buyers (one per quintile):
    # R by last purchase: p3 2025-07-01 < p5 2025-12-04 < p4 2026-03-01 < p1 2026-06-01 < p2 2026-06-21
    assert [m[n].r_score for n in ("p3", "p5", "p4", "p1", "p2")] == [1, 2, 3, 4, 5]
    # F by count: p2 1 < p3 2 < p1 3 < p5 4 < p4 5
    assert [m[n].f_score for n in ("p2", "p3", "p1", "p5", "p4")] == [1, 2, 3, 4, 5]
    # M by total: p5 40 < p2 50 < p3 200 < p1 600 < p4 1000
    assert [m[n].m_score for n in ("p5", "p2", "p3", "p1", "p4")] == [1, 2, 3, 4, 5]

    # LTV = AOV * purchases per year * average lifetime (years).
    # Lifetimes of buyers: p1 335, p2 0, p3 365, p4 0, p5 3 -> mean 703 / 5 = 140.6 days = 140.6 / 365 years
    # p1: 200 * 3 * 140.6 / 365 = 84360 / 365 = 231.123 -> 231.12
    # p2: 50 * 1 * 140.6 / 365 = 7030 / 365 = 19.260 -> 19.26
    # p3: 100 * 2 * 140.6 / 365 = 28120 / 365 = 77.041 -> 77.04
    # p4: 200 * 5 * 140.6 / 365 = 140600 / 365 = 385.205 -> 385.21
    # p5: 10 * 4 * 140.6 / 365 = 5624 / 365 = 15.408 -> 15.41
    ltv = {n: Decimal(m[n].ltv).quantize(Decimal("0.01")) for n in ("p1", "p2", "p3", "p4", "p5")}
    assert ltv == {"p1": Decimal("231.12"), "p2": Decimal("19.26"), "p3": Decimal("77.04"),
                   "p4": Decimal("385.21"), "p5": Decimal("15.41")}


def test_survey_and_complaint_metrics_per_profile(base):
    _, _, m = base
    # p1 answered 3 (2026-01-01) then 10 (2026-05-01): the last answer counts
    assert (m["p1"].nps_score, m["p1"].nps_class, m["p1"].csat_score, m["p1"].ces_score) == (10, "promoter", 5, 2)
    assert (m["p2"].nps_class, m["p3"].nps_class, m["p6"].nps_class, m["p5"].nps_class) == (
        "neutral", "detractor", "promoter", None)
    # p3: a resolved complaint (rating 8, would do business again) and an unanswered one
    p3 = m["p3"]
    assert (p3.complaints, p3.complaints_unanswered, p3.complaints_answered, p3.complaints_resolved) == (2, 1, 1, 1)
    assert (p3.complaint_rating_sum, p3.complaint_rating_count) == (8, 1)
    assert (p3.would_do_business_yes, p3.would_do_business_answers) == (1, 1)
    assert (m["p5"].would_do_business_yes, m["p5"].would_do_business_answers) == (0, 1)


def test_company_indicators(base):
    rt, _, _ = base
    with rt.session() as s:
        c = company_metrics(s, datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 6, 30, tzinfo=timezone.utc),
                            churn_days=365)
    # NPS: last scores p1 10, p2 8, p3 6, p4 9, p6 9 -> promoters 3, detractors 1 of 5 -> (3 - 1) / 5 = 40
    assert (c["nps"], c["nps_respondents"]) == (40.0, 5)
    # CSAT: p1 5, p2 4, p3 2, p6 3 -> 2 of 4 answered 4-5 = 50 %
    assert (c["csat"], c["csat_respondents"]) == (50.0, 4)
    # CES: p1 2, p2 4, p3 5 -> 11 / 3 = 3.67
    assert c["ces"] == 3.67
    # Complaints: 4 in all; answered (respondida/resolvida) 3 -> 75 %; resolved 2 -> 50 %;
    # ratings 8, 3, 10 -> 21 / 3 = 7.0; would do business again: yes 2 of 3 answers -> 66.67 %
    assert (c["complaints"], c["complaints_answered_pct"], c["complaints_resolved_pct"]) == (4, 75.0, 50.0)
    assert (c["complaint_rating_avg"], c["would_do_business_again_pct"]) == (7.0, 66.67)
    # Churned (180 days): p3 and p5 of 5 buyers = 40 %
    assert (c["customers"], c["churned_customers"], c["churned_pct"]) == (5, 2, 40.0)
    # Retention 2026-01-01..06-30 with a 365-day activity window: active at start = a purchase in
    # [2025-01-01, 2026-01-01) = p1 (2025-07-01), p3 (2025-07-01), p5 (2025-12) -> 3;
    # bought again in the period: p1 only -> retention 1/3 = 33.33 %, churn 2/3 = 66.67 %
    assert c["period"]["customers_at_start"] == 3 and c["period"]["retained"] == 1
    assert (c["period"]["retention_rate"], c["period"]["churn_rate"]) == (33.33, 66.67)


def test_resolution_updates_the_touched_profiles_incrementally(any_runtime):
    people = load_people(any_runtime)  # resolution already computed metrics (real clock)
    with any_runtime.session() as s:
        assert s.get(ProfileMetrics, people["p2"]).purchase_count == 1
        assert s.scalar(select(func.count()).select_from(ProfileMetrics)) == 6
    ingest_batch(any_runtime, "loja", [record(external_id="p2-b", email="p2@exemplo.com.br",
                                              events=[buy("2026-06-25", "70.00")])])
    with any_runtime.session() as s:
        p2 = s.get(ProfileMetrics, people["p2"])
        # 50 + 70 over 2 purchases: AOV 60
        assert (p2.purchase_count, p2.monetary_total, p2.average_order_value) == (2, Decimal("120.00"),
                                                                                   Decimal("60.00"))


def test_churn_days_setting_is_validated():
    from activation.metrics import churn_days_setting

    assert churn_days_setting({"CDP_CHURN_DAYS": "90"}) == 90
    assert churn_days_setting({}) == 180
    with pytest.raises(ConfigError, match="CDP_CHURN_DAYS"):
        churn_days_setting({"CDP_CHURN_DAYS": "seis meses"})


def test_a_merge_leaves_one_row_with_both_histories(any_runtime):
    from tests.factories import CPF_A

    ingest_batch(any_runtime, "loja", [
        record(external_id="m1", email="m@exemplo.com.br", events=[buy("2026-01-01", "10.00")]),
        record(external_id="m2", cpf=CPF_A, events=[buy("2026-02-01", "20.00")])])
    with any_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(ProfileMetrics)) == 2
    ingest_batch(any_runtime, "loja", [record(external_id="m3", email="m@exemplo.com.br", cpf=CPF_A)])
    with any_runtime.session() as s:
        rows = s.scalars(select(ProfileMetrics)).all()
        # one person now: 10 + 20 over 2 purchases
        assert [(r.purchase_count, r.monetary_total) for r in rows] == [(2, Decimal("30.00"))]


def test_running_lifetime_totals_follow_incremental_refreshes_and_merges(any_runtime):
    """LTV's average lifetime comes from running totals adjusted at each
    recompute; through new purchases and a merge they stay equal to the
    table's own aggregate, and LTVs equal a full refresh's."""
    from activation.models import MetricsTotals
    from tests.factories import CPF_A

    def totals():
        with any_runtime.session() as s:
            row = s.get(MetricsTotals, 1)
            pm = ProfileMetrics
            actual = s.execute(select(func.count(), func.coalesce(func.sum(pm.lifetime_days), 0))
                               .where(pm.purchase_count > 0)).one()
            ltv = dict(s.execute(select(pm.profile_id, pm.ltv)).all())
        return (row.purchasers, row.lifetime_days), tuple(actual), ltv

    load_people(any_runtime)
    ingest_batch(any_runtime, "loja", [  # two people, one later found to be the same: lifetimes 31 and 0 -> 59
        record(external_id="t1", email="t@exemplo.com.br", events=[buy("2026-01-01", "10.00"), buy("2026-02-01", "5")]),
        record(external_id="t2", cpf=CPF_A, events=[buy("2026-03-01", "20.00")])])
    running, actual, _ = totals()
    assert running == actual and running[0] >= 7
    ingest_batch(any_runtime, "loja", [record(external_id="t3", email="t@exemplo.com.br", cpf=CPF_A)])  # merge
    merged, actual, _ = totals()
    assert merged == actual and merged[0] == running[0] - 1 and merged[1] == running[1] - 31 + 59
    # The profile refreshed last got the LTV the base-wide pass computes from scratch
    # (others keep the average of their own refresh until that pass: docs/metrics.md).
    with any_runtime.session() as s:
        survivor = s.scalar(select(SourceRecord.profile_id).where(SourceRecord.external_key.is_not(None))
                            .order_by(SourceRecord.received_at.desc()).limit(1))
    _, _, incremental = totals()
    refresh_all(any_runtime)
    again, actual, full = totals()
    assert again == actual == merged
    assert incremental[survivor] == full[survivor] and full[survivor] is not None


def test_migration_0010_counts_existing_metrics_matches_the_model_and_downgrades(tmp_path, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import insert, inspect, text

    from activation.metrics import _empty
    from cdp import migrate
    from cdp.models import Base
    from cdp.store import get_engine
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "mig", backend)
    migrate.upgrade(settings, "0009")
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:  # metrics an earlier release computed: two purchasers (10 + 30 days), one not
        conn.execute(insert(ProfileMetrics.__table__), [
            _empty(pid, NOW) | {"purchase_count": count, "lifetime_days": days}
            for pid, count, days in (("a", 2, 10), ("b", 3, 30), ("c", 0, None))])
    migrate.upgrade(settings, "0010")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, purchasers, lifetime_days FROM metrics_totals")).all() == [(1, 2, 40)]
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "metrics_totals" in repr(d)] == []
    migrate.downgrade(settings, "0009")
    with engine.connect() as conn:
        assert "metrics_totals" not in inspect(conn).get_table_names()
    migrate.upgrade(settings, "head")
    engine.dispose()


def test_a_chunk_refresh_looks_its_profiles_up_never_scans_the_base(runtime):
    """SQLite plans without statistics: with an index on events.type or
    profiles.status it scanned every purchase and every active profile per
    chunk of a refresh (a million-record rebuild's refresh grew with the
    square of the base). Every statement of a refresh must find its rows
    through the profile ids."""
    from sqlalchemy import event

    from activation.metrics import refresh_profiles

    people = load_people(runtime)
    statements = []

    def capture(conn, cursor, sql, params, context, executemany):
        if sql.lstrip().upper().startswith("SELECT") and not executemany:
            statements.append((sql, params))

    # A full chunk of ids (the planner weighs the length of an IN list), most of them unknown.
    ids = list(set(people.values())) + [f"00000000-0000-0000-0000-{n:012d}" for n in range(494)]
    event.listen(runtime.engine, "before_cursor_execute", capture)
    try:
        assert refresh_profiles(runtime, ids) == len(set(people.values()))
    finally:
        event.remove(runtime.engine, "before_cursor_execute", capture)
    plans = []
    with runtime.engine.connect() as conn:
        for sql, params in statements:
            plans += [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
    touching = [p for p in plans if " events " in p + " " or " profiles " in p + " "]
    assert any("events" in p for p in touching) and any("profiles" in p for p in touching)
    # Looked up by profile id ("(profile_id=?" on events, "(id=?)" on profiles), not by a type or status.
    assert all("(profile_id=?" in p or "(id=?)" in p for p in touching), touching


def test_ltv_written_with_the_rows_equals_postgresqls_own_computation(pg_server):
    """Touched profiles get their LTV computed in Python as the rows are
    written; the base-wide pass computes it in SQL. Both must agree to the
    cent, ties included (PostgreSQL keeps 15 significant digits of a float,
    then rounds half away from zero)."""
    import random

    import psycopg

    from activation.metrics import ltv

    rng = random.Random(7)
    cases = [(Decimal("1.005"), 1.0, 1.0), (Decimal("0.125"), 1.0, 1.0), (Decimal("-2.675"), 1.0, 1.0),
             (Decimal("200.00"), 3.0, 140.6 / 365), (Decimal("10.00"), 0.0, 0.5)]
    cases += [(Decimal(rng.randrange(-50_000, 5_000_000)) / 100, round(rng.uniform(0.01, 60), 6), rng.uniform(0, 12))
              for _ in range(3000)]
    with psycopg.connect(pg_server) as conn:
        sql = [conn.execute("SELECT CAST(CAST(%s::numeric AS FLOAT) * %s::float8 * %s::float8 AS NUMERIC(14, 2))",
                            case).fetchone()[0] for case in cases]
    python = [ltv(*case) for case in cases]
    assert python == sql
    assert python[:3] == [Decimal("1.01"), Decimal("0.13"), Decimal("-2.68")]  # ties away from zero
    assert ltv(None, None, 1.0) is None
