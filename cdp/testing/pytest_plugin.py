"""pytest plugin (entry point ``pytest11: cdp``): fixtures for connector tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def fixture_server():
    """A started :class:`cdp.testing.FixtureServer` (stopped afterwards)."""
    from cdp.testing.server import FixtureServer

    with FixtureServer() as server:
        yield server


@pytest.fixture
def cdp_runtime(tmp_path):
    """A cdp Runtime on a fresh, migrated SQLite database with new keys."""
    from cdp.testing.contract import make_test_runtime

    return make_test_runtime(tmp_path / "cdp-instance")
