"""Shared fixtures: a fresh app per test on real SQLite, and on real
PostgreSQL / Redis when they are reachable.

When a service is absent its tests skip with the reason; with
CDP_REQUIRE_SERVICES=1 (set by .ci/run) an absent service fails the run."""
from __future__ import annotations

import os
import secrets
import uuid

import pytest

from cdp.config import Settings
from cdp.crypto import Keyring
from cdp.store import Runtime

PG_ADMIN_URL = os.environ.get("CDP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("CDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("CDP_REQUIRE_SERVICES") == "1"


def service_missing(name: str, why: str):
    message = f"{name} not reachable ({why}); set it up or unset CDP_REQUIRE_SERVICES"
    if REQUIRE_SERVICES:
        pytest.fail(f"CDP_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def make_settings(instance, database_url: str | None = None, redis_url: str | None = None, **overrides) -> Settings:
    env = {"CDP_INSTANCE_PATH": str(instance)}
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    return Settings.from_env(env, **overrides)


def make_runtime(settings: Settings) -> Runtime:
    from cdp import migrate

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    return Runtime(settings, keyring)


# -- PostgreSQL --------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        service_missing("PostgreSQL", type(exc).__name__)
    return PG_ADMIN_URL


@pytest.fixture
def pg_database(pg_server):
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"cdp_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from cdp.store import get_engine

    for url in list(_engines_for(name)):
        get_engine(url).dispose()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _engines_for(name: str):
    from cdp.config import normalize_database_url

    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield normalize_database_url(f"{base}/{name}")


# -- Redis ---------------------------------------------------------------------------

@pytest.fixture
def redis_url():
    try:
        from redis import Redis

        Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        service_missing("Redis", type(exc).__name__)
    return REDIS_TEST_URL


# -- the app ---------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """Database URL for each backend; PostgreSQL gets a fresh database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_database")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "instance")


@pytest.fixture
def runtime(settings) -> Runtime:
    return make_runtime(settings)


@pytest.fixture
def any_runtime(tmp_path, backend) -> Runtime:
    """The same test on SQLite and on PostgreSQL."""
    return make_runtime(make_settings(tmp_path / "instance", backend))


@pytest.fixture
def app(runtime):
    from cdp import create_app

    return create_app(runtime.settings, runtime.keyring)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api_key(runtime):
    """Factory: a bearer token with the given scopes."""
    from cdp.auth import create_api_key

    def make(*scopes: str) -> str:
        with runtime.session() as session:
            return create_api_key(session, f"test-{uuid.uuid4().hex[:6]}", list(scopes))[1]

    return make
