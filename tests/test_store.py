from sqlalchemy import select

from cdp.ingest import ensure_source
from cdp.models import Source
from cdp.store import among


def test_among_selects_like_in_on_both_backends(any_runtime):
    with any_runtime.session() as session:
        for name in ("loja", "erp", "forms"):
            ensure_source(session, name)
    with any_runtime.session() as session:
        found = set(session.scalars(select(Source.name).where(among(session, Source.name, ["erp", "forms", "x"]))))
        none = list(session.scalars(select(Source.name).where(among(session, Source.name, []))))
    assert found == {"erp", "forms"}
    assert none == []


def test_statistics_are_refreshed_after_growth_when_autovacuum_is_off(tmp_path, pg_database):
    """Where the server runs autovacuum the function leaves it to the server;
    where it does not (this machine's PostgreSQL), it analyzes after growth."""
    from sqlalchemy import text

    from cdp import store
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "instance", pg_database))
    with runtime.session() as session:
        autovacuum = session.execute(text("SHOW autovacuum")).scalar() == "on"
    assert store.keep_statistics_fresh(runtime, 10) is False  # too little growth either way
    ran = store.keep_statistics_fresh(runtime, 5000)
    assert ran is (not autovacuum)
    if ran:
        with runtime.session() as session:
            # reltuples is -1 until a table is first analyzed (PostgreSQL 14+).
            analyzed = session.execute(text("SELECT reltuples >= 0 FROM pg_class WHERE relname = 'identifiers'")).scalar()
        assert analyzed is True
        assert store.keep_statistics_fresh(runtime, 10) is False  # counted from zero again


def test_statistics_refresh_is_a_no_op_on_sqlite(runtime):
    from cdp import store

    assert store.keep_statistics_fresh(runtime, 1_000_000) is False
