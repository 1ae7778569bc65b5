"""Earlier releases, taken from git history by commit: CI clones without
tags, so a tag name is not enough (a shallow clone lacks the commits too, and
then the tests that need them fail loudly rather than skip)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASE_0_1_0 = "dec13be"  # tag v0.1.0: jsonb restore points (v1)
LAST_V2_CORE = "5b21c1c"  # the v2 core as it first landed


def release_tree(tmp_path_factory: pytest.TempPathFactory, commit: str) -> Path:
    """The release's source tree, extracted under a fresh temporary directory."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "sql", "plpython", "alembic", "python_client"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"commit {commit} not in git history (clone without --depth): {archive.stderr.decode()}"
        )
    target = tmp_path_factory.mktemp(f"release-{commit}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def install_release(tree: Path, dsn: str) -> None:
    """`pgresilience install` as that release did it, in its own process."""
    env = dict(os.environ, PYTHONPATH=str(tree / "python_client"))
    code = (
        "import sys, pgresilience.installer as i; "
        "assert i.__file__.startswith(sys.argv[2]), i.__file__; i.install(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, dsn, str(tree)], env=env, check=True)
