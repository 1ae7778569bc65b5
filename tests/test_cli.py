"""The `pgresilience` command, run as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg

from pgresilience.installer import installed_revision

REPO = Path(__file__).resolve().parents[1]


def pgresilience(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    pythonpath: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment.update(env or {})
    if pythonpath is not None:
        environment["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or REPO,
        timeout=120,
    )


def test_install_status_uninstall(bare_dsn: str) -> None:
    installed = pgresilience("install", "--dsn", bare_dsn)
    assert installed.returncode == 0, installed.stderr
    assert "migrated schema resilience from revision none" in installed.stdout

    status = pgresilience("status", "--dsn", bare_dsn)
    assert status.returncode == 0, status.stderr
    assert "installed: revision" in status.stdout
    assert "PL/Python:" in status.stdout and "event triggers:" in status.stdout

    removed = pgresilience("uninstall", "--dsn", bare_dsn)
    assert removed.returncode == 0, removed.stderr
    assert "removed schema resilience" in removed.stdout
    assert "not installed" in pgresilience("status", "--dsn", bare_dsn).stdout


def test_dsn_comes_from_database_url(bare_dsn: str) -> None:
    result = pgresilience("install", "--expose", "none", env={"DATABASE_URL": bare_dsn})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(bare_dsn) as conn:
        assert installed_revision(conn) is not None


def test_without_a_database_it_says_what_to_do() -> None:
    result = pgresilience("status")
    assert result.returncode != 0
    assert "--dsn" in result.stderr and "DATABASE_URL" in result.stderr


def test_the_wheel_carries_the_database_side_and_installs_from_anywhere(
    bare_dsn: str, tmp_path: Path
) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("pgresilience-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for required in (
        "pgresilience/_data/sql/00_core.sql",
        "pgresilience/_data/alembic/env.py",
        "pgresilience/_data/alembic/versions/0001_foundation.py",
        "pgresilience/_data/alembic/versions/0001_foundation.sql",
        "pgresilience/queries/installer.sql",
        "pgresilience/py.typed",
    ):
        assert required in names

    # From an unrelated directory, with only the unpacked wheel importable.
    result = pgresilience("install", "--dsn", bare_dsn, cwd=tmp_path, pythonpath=tmp_path / "site")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(bare_dsn) as conn:
        assert installed_revision(conn) is not None


def test_watch_prints_each_migration_as_it_commits(dsn: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "pgresilience.cli", "watch", "--dsn", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert watcher.stdout is not None
        assert "watching schema changes" in watcher.stdout.readline()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create table watched_orders (id int primary key)")
        # Without PL/Python a line first says the client computes the diff.
        seen: list[str] = []
        while len(seen) < 3 and not any("table_added" in line for line in seen):
            seen.append(watcher.stdout.readline())
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
    assert any("table_added" in line and "watched_orders" in line for line in seen), seen
