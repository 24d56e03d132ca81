"""The example third-party connector (examples/cdp-connector-example),
installed with pip like a partner's package: discovered by `cdp plugins
list`, configured and synced with `cdp sources`, with no change to cdp."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cdp.testing import FixtureServer
from tests.connectors.venvs import isolated_venv, pip_install, run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cdp-connector-example"


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    """The example, copied (an editable install writes build files next to it) and installed."""
    root = tmp_path_factory.mktemp("example")
    package = root / "cdp-connector-example"
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache"))
    python = isolated_venv(root / "venv")
    installed = pip_install(python, package)
    assert installed.returncode == 0, installed.stderr
    return python, package


def test_discovered_by_plugins_list(example_env):
    python, _ = example_env
    listed = run(python, "-m", "cdp.cli", "plugins", "list").stdout.splitlines()
    assert "example_crm\tcdp-connector-example 0.1.0\tcdp_source_types\texample_crm" in listed
    assert "source types: bling, example_crm, file, html_form, nuvemshop, rd_station, reclame_aqui, typeform, vtex" in listed


def test_configured_and_synced_with_the_cdp_command(example_env, tmp_path):
    python, package = example_env
    instance = str(tmp_path / "instance")
    with FixtureServer() as server:
        server.load(package / "tests" / "fixtures")
        assert run(python, "-m", "cdp.cli", "init", CDP_INSTANCE_PATH=instance).returncode == 0
        added = run(python, "-m", "cdp.cli", "sources", "add", "exemplo", "--type", "example_crm", "--config",
                    f"base_url={server.url}", "--config", "api_key=exemplo-test-key-4f2a9c",
                    CDP_INSTANCE_PATH=instance)
        assert added.returncode == 0, added.stderr
        checked = run(python, "-m", "cdp.cli", "sources", "check", "exemplo", CDP_INSTANCE_PATH=instance)
        assert checked.stdout.startswith("ok: exemplo (example_crm)"), checked.stderr
        synced = run(python, "-m", "cdp.cli", "sources", "sync", "exemplo", CDP_INSTANCE_PATH=instance)
        assert synced.returncode == 0, synced.stderr
        assert json.loads(synced.stdout) | {"run": 0} == {"run": 0, "batches": 2, "accepted": 3, "updated": 0,
                                                          "duplicate": 0, "rejected": 0}
        again = run(python, "-m", "cdp.cli", "sources", "sync", "exemplo", CDP_INSTANCE_PATH=instance)
        assert json.loads(again.stdout)["accepted"] == 0
    links = run(python, "-m", "cdp.cli", "links", CDP_INSTANCE_PATH=instance).stdout.splitlines()
    assert sorted(line.split(",")[1] for line in links[1:]) == ["501", "502", "503"]
    for proc in (added, checked, synced):
        assert "exemplo-test-key-4f2a9c" not in proc.stdout + proc.stderr


def test_the_example_passes_its_own_contract_tests(example_env):
    python, package = example_env
    tests = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package), cwd=package)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    summary = tests.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary
