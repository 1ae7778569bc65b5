"""`pgresilience install --print-sql`: one SQL script that psql applies to the
same catalog `install` gives, for each target; applying it again changes
nothing, and it upgrades an earlier install like `install` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgresilience.installer import install

from catalog import definition_listing

REPO = Path(__file__).resolve().parents[2]
STATE = """
select (select string_agg(name || '=' || value, ',' order by name) from resilience.settings),
       (select version_num from resilience.alembic_version),
       (select string_agg(name, ',' order by name) from resilience.plpython_modules),
       (select string_agg(name, ',' order by name) from resilience.created_extensions)
"""


def print_sql(*options: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", "install", "--print-sql", *options],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def psql(dsn: str, script: Path) -> None:
    psql_bin = shutil.which("psql")
    assert psql_bin, "psql is needed (apt package postgresql-client)"
    result = subprocess.run(
        [
            psql_bin,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            str(script),
            dsn,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def snapshot(dsn: str) -> tuple[list[str], object]:
    with psycopg.connect(dsn) as conn:
        state = conn.execute(STATE).fetchone()
    return definition_listing(dsn), state


@pytest.mark.parametrize(
    ("options", "kwargs"),
    [
        # The default script creates the PL/Python functions: it needs a
        # server where plpython3u loads (the hosted-minimal case has none).
        pytest.param((), {}, marks=pytest.mark.plpython),
        (
            ("--expose", "none", "--no-plpython", "--no-event-triggers"),
            {"expose": None, "plpython": False, "event_triggers": False},
        ),
        pytest.param(
            ("--expose", "api", "--no-event-triggers"),
            {"expose": "api", "event_triggers": False},
            marks=pytest.mark.plpython,
        ),
    ],
    ids=["default", "hosted-minimal", "api-schema"],
)
def test_the_script_gives_the_catalog_install_gives(server, bare_dsn, tmp_path, options, kwargs):
    script = tmp_path / "pgresilience.sql"
    script.write_text(print_sql(*options))
    other = "pgr_printsql_" + os.urandom(6).hex()
    other_dsn = server.create_database(other)
    try:
        for target in (bare_dsn, other_dsn):
            if kwargs.get("expose") == "api":
                with psycopg.connect(target, autocommit=True) as conn:
                    conn.execute("create schema api")
        psql(bare_dsn, script)
        install(other_dsn, **kwargs)
        assert snapshot(bare_dsn) == snapshot(other_dsn)
        # Applied again (the next deploy): nothing changes.
        psql(bare_dsn, script)
        assert snapshot(bare_dsn) == snapshot(other_dsn)
    finally:
        server.drop_database(other)


def test_print_sql_contacts_no_database():
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    refused = subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", "install", "--print-sql", "--dsn", "x"],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert refused.returncode == 2
