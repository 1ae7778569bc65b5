"""Fixtures of the upgrade review: the last release (git tag v0.1.0) installed
by its own installer, in its own process, into a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_RELEASE_TAG = "v0.1.0"


@pytest.fixture(scope="session")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of the tag (a shallow clone lacks it: fail loudly)."""
    target = tmp_path_factory.mktemp("v0_1_0")
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            LAST_RELEASE_TAG,
            "sql",
            "plpython",
            "alembic",
            "python_client",
        ],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.fail(f"tag {LAST_RELEASE_TAG} not in git history: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


@pytest.fixture
def install_0_1_0(release_0_1_0: Path) -> Callable[[str], None]:
    """install_0_1_0(dsn): `pgresilience install` as 0.1.0 did it."""

    def run(dsn: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(release_0_1_0 / "python_client"))
        code = (
            "import sys, pgresilience.installer as i; "
            "assert i.__file__.startswith(sys.argv[2]), i.__file__; i.install(sys.argv[1])"
        )
        subprocess.run([sys.executable, "-c", code, dsn, str(release_0_1_0)], env=env, check=True)

    return run
