"""Fixtures for the connector framework tests: a VTEX stand-in on the local
fixture server, fast retries, and test-only plugins registered in-process."""
from __future__ import annotations

import pytest

from cdp import http as cdp_http
from cdp.testing import FixtureServer
from tests.connectors.vtex_fake import VtexFake


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=2, backoff=0.01, retry_after_max=1))


@pytest.fixture
def vtex(fast_retries):
    """A started fixture server playing VTEX, with the recorded orders."""
    with FixtureServer() as server:
        yield VtexFake(server)


@pytest.fixture
def test_plugin():
    """Register a plugin object in this process for one test: test_plugin(obj, name)."""
    from cdp import plugins

    names = []

    def register(plugin, name: str):
        plugins.register(plugin, name)
        names.append(name)

    yield register
    for name in names:
        plugins.unregister(name)


@pytest.fixture
def problem():
    """Checks an RFC 7807 answer (shared with the API tests) and returns its body."""
    from tests.api.conftest import check_problem

    return check_problem
