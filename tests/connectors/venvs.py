"""A throw-away virtualenv that sees this project's environment (cdp and its
dependencies) and into which a connector package is pip-installed like a
third party's. Installing into a venv of the test's own keeps the shared
.venv untouched, so other runs never see a half-installed test plugin."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def isolated_venv(directory: Path) -> Path:
    """Create the venv; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=300)
    python = directory / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=300).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    # Processed at start-up: the project's site-packages, with its own .pth files (cdp is an editable install).
    (Path(purelib) / "_cdp_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python


def pip_install(python: Path, package: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-input", "-e", str(package)],
                          capture_output=True, text=True, timeout=600, env=clean_env())


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CDP_", "PYTEST_")) and k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH")}
    env.update(extra)
    return env


def run(python: Path, *args, cwd: Path | None = None, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=clean_env(**env))
