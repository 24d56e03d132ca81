"""Engine, sessions and the data-key store shared by every part of the app."""
from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

from sqlalchemy import JSON, any_, bindparam, create_engine, event, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cdp import crypto
from cdp.config import Settings
from cdp.models import DataKey, new_ordered_id, utcnow


@lru_cache(maxsize=8)
def get_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # Overwrite freed pages with zeros, so shredded or deleted
            # ciphertext does not linger in the file.
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(database_url, pool_pre_ping=True)


@dataclass
class Runtime:
    """What a request, a CLI command or a job needs: settings, keys, a DB."""

    settings: Settings
    keyring: crypto.Keyring
    engine: Engine = field(init=False)
    sessionmaker: sessionmaker = field(init=False)

    def __post_init__(self):
        self.engine = get_engine(self.settings.database_url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_env(cls) -> "Runtime":
        settings = Settings.from_env()
        return cls(settings, crypto.Keyring.load(settings))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def keys(self, session: Session) -> "KeyStore":
        return KeyStore(session, self.keyring)


def tune_gc() -> None:
    """Run CPython's cycle collector less often in a process that resolves
    records: matching makes millions of short-lived containers (features,
    rows, sets) while the process holds many long-lived ones (the feature
    cache), and with the default thresholds collections took most of the
    time of unpacking a record's features (13 us of 15, measured). This code
    makes few reference cycles; what they hold waits a little longer."""
    gc.set_threshold(50_000, 20, 20)


class KeyStore:
    """Creates, unwraps and destroys data keys within one session. Unwrapped
    keys are cached only for the life of this object (one unit of work)."""

    def __init__(self, session: Session, keyring: crypto.Keyring):
        self.session = session
        self.keyring = keyring
        self._cache: dict[str, bytes] = {}
        self._pending: list[dict] = []

    def create(self, bulk: bool = False, key_id: str | None = None) -> tuple[str, bytes]:
        """A new data key. With bulk=True the row is queued for write_pending()
        (one executemany for a whole batch of records). key_id: when the key
        belongs to something that already has an id (a rebuild's run)."""
        key_id = key_id or new_ordered_id()
        dek = crypto.new_data_key()
        kek_id, wrapped = self.keyring.wrap(key_id, dek)
        if bulk:
            self._pending.append({"id": key_id, "kek_id": kek_id, "wrapped": wrapped, "created_at": utcnow(),
                                  "destroyed_at": None})
        else:
            self.session.add(DataKey(id=key_id, kek_id=kek_id, wrapped=wrapped))
        self._cache[key_id] = dek
        return key_id, dek

    def write_pending(self) -> None:
        insert_rows(self.session, DataKey.__table__, self.take_pending())

    def take_pending(self) -> list[dict]:
        """The queued rows of bulk-created keys, for a caller that writes them
        elsewhere (a batch built in another process)."""
        rows, self._pending = self._pending, []
        return rows

    def get(self, key_id: str) -> bytes:
        dek = self._cache.get(key_id)
        if dek is None:
            row = self.session.execute(
                select(DataKey.kek_id, DataKey.wrapped).where(DataKey.id == key_id)
            ).first()
            if row is None or row.wrapped is None:
                raise crypto.DecryptionError(f"data key {key_id} has been destroyed")
            dek = self.keyring.unwrap(key_id, row.kek_id, row.wrapped)
            self._cache[key_id] = dek
        return dek

    def preload(self, key_ids: list[str]) -> None:
        """Unwrap many keys with one query (resolution of a batch)."""
        wanted = [k for k in set(key_ids) if k not in self._cache]
        t = DataKey.__table__  # plain rows: the ORM's row handling cost more than the unwrapping
        for start in range(0, len(wanted), 500):
            self.unwrap_rows(self.session.execute(
                select(t.c.id, t.c.kek_id, t.c.wrapped).where(among(self.session, t.c.id, wanted[start:start + 500]))
            ).all())

    def unwrap_rows(self, rows) -> None:
        """Unwrap keys from (id, kek_id, wrapped) rows a caller read itself
        (with the rows they encrypt); destroyed ones (wrapped None) are skipped."""
        for key_id, kek_id, wrapped in rows:
            if wrapped is not None and key_id not in self._cache:
                self._cache[key_id] = self.keyring.unwrap(key_id, kek_id, wrapped)

    def forget(self) -> None:
        """Drop unwrapped keys from memory (long scans stay bounded)."""
        self._cache.clear()

    def destroy(self, key_ids: list[str]) -> int:
        """Crypto-shred: the wrapped key is erased, so every ciphertext made
        with it (in this database and in its backups) is unreadable."""
        for key_id in key_ids:
            self._cache.pop(key_id, None)
        if not key_ids:
            return 0
        result = self.session.execute(
            update(DataKey)
            .where(DataKey.id.in_(key_ids), DataKey.wrapped.is_not(None))
            .values(wrapped=None, kek_id=None, destroyed_at=utcnow())
        )
        return result.rowcount or 0


def rotate_keys(runtime: Runtime, batch_size: int = 1000, progress=None) -> int:
    """Re-wrap every live data key under the keyring's active KEK.

    Data is never decrypted; each batch is its own transaction, so readers
    keep working throughout (a row names the KEK that wraps it, and the old
    KEK stays in the keyring until `cdp keys retire`)."""
    ring = runtime.keyring
    active = ring.active_kek_id
    done = 0
    while True:
        with runtime.session() as session:
            rows = session.scalars(
                select(DataKey)
                .where(DataKey.wrapped.is_not(None), DataKey.kek_id != active)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            for row in rows:
                dek = ring.unwrap(row.id, row.kek_id, row.wrapped)
                row.kek_id, row.wrapped = ring.wrap(row.id, dek)
            done += len(rows)
        if progress:
            progress(len(rows))
    return done


def keks_in_use(runtime: Runtime) -> set[str]:
    with runtime.session() as session:
        return set(session.scalars(select(DataKey.kek_id).where(DataKey.kek_id.is_not(None)).distinct()))


def among(session: Session, column, values):
    """`column IN (values)`; on PostgreSQL written `column = ANY(array)`: one
    parameter instead of hundreds, so the driver does not re-parse a long
    statement on every query of a bulk lookup (a measurable share of
    resolution time). Elsewhere one expanding parameter: `in_(list)` would
    coerce every value into its own literal when the statement is built."""
    values = list(values)
    # (Sent as one text literal cast to an array, it was cheaper for the driver but the
    # server's generic plans, blind to the array's size, scanned whole tables.)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(bindparam(None, values, type_=column.type, expanding=True))


# PostgreSQL's defaults suit a laptop: with them, at a million records, one
# page read in six of the holder lookups came from the OS, the backends
# wrote out millions of evicted pages themselves and the server checkpointed
# every 23 seconds (README, "PostgreSQL settings"). Below these, a worker
# says so when it starts.
SERVER_MINIMUMS = {
    "shared_buffers": (1 << 30, "a quarter of the server's memory"),
    "max_wal_size": (4 << 30, "fewer checkpoints, each writing less"),
}


def server_advice(engine: Engine) -> list[str]:
    """One line per setting of this PostgreSQL server below SERVER_MINIMUMS
    (none on SQLite), naming the setting, its value and what to set."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        # In bytes, as the server itself reads its units (8kB pages, MB, ...).
        values = {name: conn.execute(text("SELECT pg_size_bytes(current_setting(:name))"), {"name": name}).scalar()
                  for name in SERVER_MINIMUMS}
    return settings_advice(values)


def settings_advice(values: dict[str, int]) -> list[str]:
    return [f"PostgreSQL {name} is {values[name] >> 20} MB: set at least {minimum >> 30} GB ({why}) for a base "
            f"past a few hundred thousand records (README, 'PostgreSQL settings')"
            for name, (minimum, why) in SERVER_MINIMUMS.items() if name in values and values[name] < minimum]


_AUTOVACUUM: dict[str, bool] = {}
STATISTICS_TABLES = ("source_records", "identifiers", "profiles", "events", "profile_metrics")
STATISTICS_LOCK_ID = 0x43445332  # "CDP2": one process refreshes at a time
# Identifier rows (about ten a record) inserted since `identifiers` was last
# vacuumed, below which statistics are not refreshed whatever the base's size.
MIN_GROWTH = 20_000


def keep_statistics_fresh(runtime: "Runtime") -> bool:
    """PostgreSQL plans lookups from table statistics that autovacuum keeps
    fresh. On a server running without autovacuum, a bulk load leaves them
    describing near-empty tables and the blind-index lookups turn into
    sequential scans (resolution got several times slower as data grew).
    There, refresh them ourselves each time the data has grown by a fifth,
    and vacuum `identifiers` too: its covering index answers the holder
    lookups alone only for pages the visibility map marks all-visible,
    which autovacuum would otherwise do. Growth is read from the server's
    own counters, so several workers refresh once between them, not once
    each. Returns whether it ran."""
    url = runtime.settings.database_url
    if not url.startswith("postgresql"):
        return False
    if _AUTOVACUUM.get(url):
        return False  # known to be the server's job: no connection taken (this runs after every job)
    engine = get_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # VACUUM cannot run in a transaction
        if url not in _AUTOVACUUM:
            _AUTOVACUUM[url] = conn.exec_driver_sql("SHOW autovacuum").scalar() == "on"
            if _AUTOVACUUM[url]:
                return False

        def grown() -> bool:
            rows, size = conn.exec_driver_sql(
                "SELECT s.n_ins_since_vacuum, greatest(c.reltuples, 0) FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid WHERE s.relid = 'identifiers'::regclass").one()
            return rows >= max(MIN_GROWTH, size / 5)

        if not grown() or not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({STATISTICS_LOCK_ID})").scalar():
            return False
        try:
            if not grown():  # refreshed by another process since
                return False
            # A quarter of the default sample (7,500 rows a table, not 30,000):
            # resolution's plans need table sizes and key spreads, not fine
            # histograms, and these refreshes recur as the base grows.
            conn.exec_driver_sql("SET default_statistics_target = 25")
            conn.exec_driver_sql("VACUUM (ANALYZE) identifiers")
            conn.exec_driver_sql("ANALYZE " + ", ".join(t for t in STATISTICS_TABLES if t != "identifiers"))
        finally:
            conn.exec_driver_sql("RESET default_statistics_target")
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({STATISTICS_LOCK_ID})")
    return True


def insert_rows(session: Session, table, rows: list[dict]) -> None:
    """Insert many rows of one table (every row with the same keys). On
    PostgreSQL through COPY in the session's transaction — ingest writes
    a dozen identifier rows per record, and COPY takes a fraction of the
    time of an executemany; elsewhere one executemany."""
    if not rows:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    columns = [table.c[name] for name in rows[0]]
    procs = [_to_driver(c, bind.dialect) for c in columns]
    raw = session.connection().connection.driver_connection
    names = ", ".join(f'"{c.name}"' for c in columns)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([proc(row[c.name]) if proc else row[c.name] for c, proc in zip(columns, procs)])


def _to_driver(column, dialect):
    """The conversion an INSERT would apply to this column's values (type
    decorators, JSON as text), for statements written by hand."""
    if isinstance(column.type, JSON):
        return lambda value: None if value is None else json.dumps(value)
    return column.type.bind_processor(dialect)


def update_rows(session: Session, table, rows: list[dict], key: str = "id") -> None:
    """Update many rows of one table by primary key, each with its own values
    (every row with the same keys), in one executemany. (An UPDATE ... FROM
    unnest(arrays) on PostgreSQL was measured slower: the planner scans the
    whole table for a join it cannot size.)"""
    if not rows:
        return
    names = [name for name in rows[0] if name != key]
    stmt = (update(table).where(table.c[key] == bindparam("b_key"))
            .values({name: bindparam(f"b_{name}") for name in names}))
    session.execute(stmt, [{"b_key": row[key], **{f"b_{name}": row[name] for name in names}} for row in rows])
