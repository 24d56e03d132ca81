from sqlalchemy import select

from cdp.ingest import ensure_source
from cdp.models import Source
from cdp.store import among


def test_among_selects_like_in_on_both_backends(any_runtime):
    # Values an array sent as text would misread unless quoted or escaped (commas, braces, a NULL,
    # quotes, backslashes): a guard for whoever tries that again to spare the driver's work.
    odd = ["a,b", "{c}", "NULL", 'say "oi"', "back\\slash", " pad "]
    with any_runtime.session() as session:
        for name in ("loja", "erp", "forms", *odd):
            ensure_source(session, name)
    with any_runtime.session() as session:
        def found(values):
            return set(session.scalars(select(Source.name).where(among(session, Source.name, values))))

        assert found(["erp", "forms", "x"]) == {"erp", "forms"}
        assert found([]) == set()
        assert found(odd[:4] + ["x"]) == set(odd[:4])
        assert found(odd) == set(odd)
        assert found(["null"]) == set()  # a value, not the NULL of an array literal


def test_statistics_are_refreshed_after_growth_when_autovacuum_is_off(tmp_path, pg_database):
    """Where the server runs autovacuum the function leaves it to the server;
    where it does not (this machine's PostgreSQL), it analyzes after growth,
    read from the server's counters: what any process inserted counts, and
    once refreshed, a second caller finds nothing to do."""
    import time
    from datetime import datetime, timezone

    from sqlalchemy import text

    from cdp import store
    from cdp.models import Identifier, SourceRecord, new_id
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "instance", pg_database))
    with runtime.session() as session:
        autovacuum = session.execute(text("SHOW autovacuum")).scalar() == "on"
    assert store.keep_statistics_fresh(runtime) is False  # nothing stored yet either way

    at = datetime(2026, 12, 7, tzinfo=timezone.utc)
    with runtime.session() as session:  # a record with more identifier rows than the minimum growth
        ensure_source(session, "loja")
        keys = runtime.keys(session)
        key_id, _ = keys.create(bulk=True)
        keys.write_pending()
        rid = new_id()
        store.insert_rows(session, SourceRecord.__table__, [dict(
            id=rid, source="loja", external_key=b"k" * 32, external_id_ct=b"ct", key_id=key_id, profile_id=None,
            version=1, content_hash=b"h" * 32, payload_ct=b"p", status="pending", link_rule=None, link_details=None,
            observed_at=at, received_at=at, updated_at=at)])
        store.insert_rows(session, Identifier.__table__, [
            {"record_id": rid, "kind": "bk:nm", "blind_index": n.to_bytes(4, "big"), "strong": False}
            for n in range(store.MIN_GROWTH + 10)])
        session.execute(text("SELECT pg_stat_force_next_flush()"))  # counters reach the server at commit
    deadline = time.monotonic() + 15
    with runtime.session() as session:
        while session.execute(text(
                "SELECT n_ins_since_vacuum FROM pg_stat_user_tables WHERE relname = 'identifiers'")).scalar() \
                < store.MIN_GROWTH and time.monotonic() < deadline:
            session.rollback()  # a new snapshot of the counters
            time.sleep(0.2)

    ran = store.keep_statistics_fresh(runtime)
    assert ran is (not autovacuum)
    if ran:
        with runtime.session() as session:
            analyzed = session.execute(text("SELECT reltuples > 0 FROM pg_class WHERE relname = 'identifiers'")).scalar()
            # Vacuumed too: only then may the covering index answer holder lookups alone.
            vacuumed = session.execute(text(
                "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'identifiers'")).scalar()
        assert analyzed is True
        assert vacuumed is True
        assert store.keep_statistics_fresh(runtime) is False  # done: counted from zero again


def test_statistics_refresh_is_a_no_op_on_sqlite(runtime):
    from cdp import store

    assert store.keep_statistics_fresh(runtime) is False


def test_insert_rows_and_update_rows_round_trip_on_both_backends(any_runtime):
    """Bulk helpers (COPY / unnest on PostgreSQL) convert values as the ORM does:
    bytes, booleans, JSON, aware datetimes and NULLs come back unchanged."""
    from datetime import datetime, timezone

    from cdp.models import Identifier, SourceRecord, new_id
    from cdp.store import insert_rows, update_rows

    at = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    with any_runtime.session() as session:
        ensure_source(session, "loja")
        keys = any_runtime.keys(session)
        key_id, _ = keys.create(bulk=True)
        keys.write_pending()
        ids = [new_id() for _ in range(3)]
        insert_rows(session, SourceRecord.__table__, [dict(
            id=rid, source="loja", external_key=bytes([n]) * 32, external_id_ct=b"\x00ct", key_id=key_id,
            profile_id=None, version=1, content_hash=b"h" * 32, payload_ct=b"\x01\x02", status="pending",
            link_rule=None, link_details=None, observed_at=at, received_at=at, updated_at=at) for n, rid in enumerate(ids)])
        insert_rows(session, Identifier.__table__, [
            {"record_id": ids[0], "kind": "email", "blind_index": b"\x00\xffbi", "strong": True},
            {"record_id": ids[1], "kind": "bk:nm", "blind_index": b"\x10", "strong": False}])
    with any_runtime.session() as session:
        update_rows(session, SourceRecord.__table__, [
            {"id": ids[0], "link_rule": "same_cpf", "link_details": {"matched_record": ids[1], "p": 0.5}, "status": "resolved"},
            {"id": ids[1], "link_rule": None, "link_details": None, "status": "resolved"}])
    with any_runtime.session() as session:
        rows = {r.id: r for r in session.scalars(select(SourceRecord).where(SourceRecord.id.in_(ids)))}
        assert rows[ids[0]].link_rule == "same_cpf"
        assert rows[ids[0]].updated_at == at  # a column the update did not name keeps its value
        assert rows[ids[0]].link_details == {"matched_record": ids[1], "p": 0.5}
        assert rows[ids[0]].status == rows[ids[1]].status == "resolved"
        assert rows[ids[1]].link_details is None and rows[ids[2]].status == "pending"
        assert rows[ids[2]].observed_at == at and rows[ids[2]].payload_ct == b"\x01\x02"
        idents = sorted(session.execute(select(Identifier.kind, Identifier.blind_index, Identifier.strong)).all())
        assert idents == [("bk:nm", b"\x10", False), ("email", b"\x00\xffbi", True)]


def test_update_rows_gives_each_row_its_own_values_of_every_type(any_runtime):
    """A NULL in the first row, a column of NULLs only, bytes, JSON and aware
    datetimes, on both backends."""
    from datetime import datetime, timedelta, timezone

    from cdp.models import SourceRecord, new_id
    from cdp.store import insert_rows, update_rows

    at = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    n = 40
    ids = [new_id() for _ in range(n)]
    with any_runtime.session() as session:
        ensure_source(session, "loja")
        keys = any_runtime.keys(session)
        key_id, _ = keys.create(bulk=True)
        keys.write_pending()
        insert_rows(session, SourceRecord.__table__, [dict(
            id=rid, source="loja", external_key=i.to_bytes(32, "big"), external_id_ct=b"ct", key_id=key_id,
            profile_id=None, version=1, content_hash=b"h" * 32, payload_ct=b"p", status="pending",
            link_rule=None, link_details=None, observed_at=at, received_at=at, updated_at=at)
            for i, rid in enumerate(ids)])
    with any_runtime.session() as session:
        update_rows(session, SourceRecord.__table__, [
            {"id": rid, "version": i + 2, "profile_id": None, "features_ct": None,
             "content_hash": bytes([i % 256]) * 3,
             "link_details": None if i == 0 else {"n": i}, "updated_at": at + timedelta(seconds=i)}
            for i, rid in enumerate(ids)])
    with any_runtime.session() as session:
        got = {r.id: r for r in session.scalars(select(SourceRecord))}
    for i, rid in enumerate(ids):
        row = got[rid]
        assert row.version == i + 2
        assert row.features_ct is None
        assert row.content_hash == bytes([i % 256]) * 3
        assert row.link_details == (None if i == 0 else {"n": i})
        assert row.updated_at == at + timedelta(seconds=i)
        assert row.status == "pending" and row.payload_ct == b"p" and row.profile_id is None


def test_settings_advice_names_each_setting_below_its_minimum():
    from cdp.store import settings_advice

    advice = settings_advice({"shared_buffers": 128 << 20, "max_wal_size": 8 << 30})
    assert len(advice) == 1
    assert advice[0].startswith("PostgreSQL shared_buffers is 128 MB: set at least 1 GB")
    assert settings_advice({"shared_buffers": 6 << 30, "max_wal_size": 4 << 30}) == []
    assert [a.split()[1] for a in settings_advice({"shared_buffers": 1, "max_wal_size": 1})] == [
        "shared_buffers", "max_wal_size"]


def test_server_advice_reads_the_servers_own_values(any_runtime):
    from sqlalchemy import text

    from cdp.store import SERVER_MINIMUMS, get_engine, server_advice, settings_advice

    engine = get_engine(any_runtime.settings.database_url)
    if engine.dialect.name == "sqlite":
        assert server_advice(engine) == []
        return
    import re

    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    values = {}
    with engine.connect() as conn:  # SHOW's text (e.g. "128MB", "1GB"), read here on its own
        for name in SERVER_MINIMUMS:
            number, unit = re.fullmatch(r"(\d+)(kB|MB|GB|TB)", conn.execute(text(f"SHOW {name}")).scalar()).groups()
            values[name] = int(number) * units[unit]
    assert server_advice(engine) == settings_advice(values)
