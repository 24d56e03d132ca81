"""`cdp plugins new NAME` makes a pip-installable connector package that
passes its own tests (the contract kit) out of the box."""
from __future__ import annotations

from tests.connectors.venvs import isolated_venv, pip_install, run
from tests.test_cli import run_cdp


def test_new_package_installs_is_discovered_and_passes_its_own_tests(tmp_path):
    created = run_cdp(tmp_path / "instance", "plugins", "new", "acme_crm", "--dir", str(tmp_path))
    package = tmp_path / "cdp-connector-acme-crm"
    assert created.stdout.splitlines()[0] == f"created {package}"
    for relative in ("pyproject.toml", "README.md", "src/cdp_connector_acme_crm/connector.py",
                     "tests/test_connector.py", "tests/fixtures/routes.json", "tests/fixtures/contacts_page1.json"):
        assert (package / relative).is_file(), relative
    assert 'acme_crm = "cdp_connector_acme_crm.connector"' in (package / "pyproject.toml").read_text()

    python = isolated_venv(tmp_path / "venv")
    installed = pip_install(python, package)
    assert installed.returncode == 0, installed.stderr
    listed = run(python, "-m", "cdp.cli", "plugins", "list")
    assert "acme_crm\tcdp-connector-acme-crm 0.1.0\tcdp_source_types\tacme_crm" in listed.stdout.splitlines()

    tests = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package), cwd=package)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    summary = tests.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 17  # the contract tests ran


def test_the_scaffold_package_is_not_visible_to_the_shared_environment(tmp_path):
    run_cdp(tmp_path / "instance", "plugins", "new", "acme_crm", "--dir", str(tmp_path))
    assert "acme_crm" not in run_cdp(tmp_path / "instance", "plugins", "list").stdout


def test_bad_names_and_existing_folders_exit_2(tmp_path):
    bad = run_cdp(tmp_path / "instance", "plugins", "new", "Acme CRM", "--dir", str(tmp_path), check=False)
    assert bad.returncode == 2 and "snake_case" in bad.stderr
    run_cdp(tmp_path / "instance", "plugin", "new", "acme", "--dir", str(tmp_path))
    again = run_cdp(tmp_path / "instance", "plugin", "new", "acme", "--dir", str(tmp_path), check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
