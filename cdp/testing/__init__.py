"""The connector test kit, shipped with cdp so a connector package can use it.

* :class:`ConnectorContract`: subclass it to run the standard contract tests
  on a connector (docs/plugins.md, "Testing a connector").
* :class:`FixtureServer`: a local HTTP server serving recorded JSON pages,
  which can answer 429 with Retry-After, 5xx, 401 or a malformed page.
* ``make_test_runtime(dir)``: a migrated SQLite database with fresh keys.
* The pytest plugin (registered as ``pytest11`` entry point ``cdp``) adds the
  fixtures ``fixture_server`` and ``cdp_runtime`` to any test.
"""
from cdp.testing.server import FixtureServer

__all__ = ["ConnectorContract", "FixtureServer", "make_test_runtime", "read_all"]


def __getattr__(name):
    # The contract imports pytest: load it only when asked for.
    if name in ("ConnectorContract", "make_test_runtime", "read_all"):
        from cdp.testing import contract

        return getattr(contract, name)
    raise AttributeError(name)
