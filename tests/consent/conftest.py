"""Consent ledger fixtures: a runtime with the default purposes, on SQLite
and PostgreSQL (crt) or SQLite only (srt), and a profile factory."""
from __future__ import annotations

import pytest

from consent.purposes import seed_defaults
from tests.consent.helpers import new_profile


@pytest.fixture
def crt(any_runtime):
    """any_runtime (SQLite and PostgreSQL) with the default purposes."""
    with any_runtime.session() as session:
        seed_defaults(session)
    return any_runtime


@pytest.fixture
def srt(runtime):
    """SQLite-only runtime with the default purposes (API and CLI tests)."""
    with runtime.session() as session:
        seed_defaults(session)
    return runtime


@pytest.fixture
def make_profiles():
    def make(rt, n: int = 1) -> list[str]:
        with rt.session() as session:
            keys = rt.keys(session)
            return [new_profile(session, keys) for _ in range(n)]

    return make
