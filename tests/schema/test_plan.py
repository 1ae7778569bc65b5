"""`pgresilience plan FILE [--alembic] [--fail-on SEVERITY] [--json]` and
`schema_preview()`: the migration really runs (DO blocks and dynamic SQL
included), its rated changes are printed, everything is rolled back, and the
exit code gates CI: 0 below --fail-on, 1 at or above, 2 when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command

from .conftest import drop_plpython_diff
from .test_alembic_sample_app import SAMPLE_APP, alembic_config

REPO = Path(__file__).resolve().parents[2]


def plan(*args: str | Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", "plan", *map(str, args)],
        capture_output=True, text=True, env=environment, cwd=REPO, timeout=120,
    )  # fmt: skip


@pytest.fixture
def db(conn: psycopg.Connection[Any], mode: str) -> psycopg.Connection[Any]:
    """The test database, in either diff mode."""
    if mode == "client":
        drop_plpython_diff(conn)
    return conn


@pytest.fixture
def app(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database with a small app schema."""
    db.execute("create table users (id int primary key, email text, legacy text)")
    db.execute("create table orders (id int primary key, legacy text)")
    return db


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What a plan must leave untouched: versions, hash, columns."""
    row = conn.execute(
        "select (select max(version) from resilience.schema_versions),"
        " resilience.schema_current()->>'hash',"
        " (select count(*) from information_schema.columns where table_schema = 'public')"
    ).fetchone()
    assert row is not None
    return tuple(row)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "migration.sql"
    path.write_text(text)
    return path


def test_do_block_migration(app: psycopg.Connection[Any], dsn: str, tmp_path: Path) -> None:
    before = state(app)
    migration = write(
        tmp_path, "do $$ begin execute 'alter table users add column bio text'; end $$;"
    )
    result = plan(migration, "--dsn", dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "column_added" in result.stdout and "public.users.bio" in result.stdout
    assert plan(migration, "--dsn", dsn, "--fail-on", "low").returncode == 1
    assert state(app) == before


def test_dynamic_sql_is_seen_as_it_runs(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    before = state(app)
    migration = write(tmp_path, """
        do $$
        declare t text;
        begin
            for t in select table_name from information_schema.columns
                     where table_schema = 'public' and column_name = 'legacy'
            loop
                execute format('alter table %I drop column legacy', t);
            end loop;
        end $$;
    """)  # fmt: skip
    result = plan(migration, "--dsn", dsn, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["exit_code"], report["max_severity"]) == (True, 1, "critical")
    assert {(c["type"], c["table"], c["column"]) for c in report["changes"]} == {
        ("column_dropped", "public.users", "legacy"),
        ("column_dropped", "public.orders", "legacy"),
    }
    assert plan(migration, "--dsn", dsn, "--fail-on", "critical").returncode == 1
    assert state(app) == before


@pytest.mark.parametrize(
    ("text", "sqlstate"),
    [
        ("alter table users add column bio text; alter table nope add column x int;", "42P01"),
        ("create table made (id int); commit; create table after (id int);", "0A000"),
        ("create table made (id int); rollback;", "0A000"),
    ],
    ids=["missing-table", "commit-inside", "rollback-inside"],
)
def test_a_failing_migration_exits_2_and_commits_nothing(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, text: str, sqlstate: str
) -> None:
    before = state(app)
    result = plan(write(tmp_path, text), "--dsn", dsn)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"SQLSTATE {sqlstate}" in result.stdout
    as_json = json.loads(plan(write(tmp_path, text), "--dsn", dsn, "--json").stdout)
    assert (as_json["ok"], as_json["exit_code"], as_json["error"]["sqlstate"]) == (
        False,
        2,
        sqlstate,
    )
    assert state(app) == before
    assert app.execute("select to_regclass('public.made')").fetchone() == (None,)


def test_a_begin_commit_wrapper_is_one_transaction(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    before = state(app)
    migration = write(
        tmp_path, "-- 0042\nBEGIN;\nalter table users alter column email set not null;\nCOMMIT;\n"
    )
    result = plan(migration, "--dsn", dsn, "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert [(c["type"], c["severity"]) for c in report["changes"]] == [
        ("nullability_changed", "high")
    ]
    assert state(app) == before


def test_sample_alembic_project(db: psycopg.Connection[Any], dsn: str) -> None:
    app = db
    before = state(app)
    result = plan(SAMPLE_APP, "--alembic", "--dsn", dsn, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {(c["type"], c["table"]) for c in report["changes"]} == {
        ("table_added", "public.alembic_version"),
        ("table_added", "public.users"),
        ("table_added", "public.orders"),
    }
    assert state(app) == before
    assert app.execute("select to_regclass('public.alembic_version')").fetchone() == (None,)
    # Upgraded for real to a2, the plan shows a3 alone: a widened numeric and
    # a NOT NULL column with a constant default (low), 1 at --fail-on low.
    command.upgrade(alembic_config(dsn), "a2")
    result = plan(SAMPLE_APP, "--alembic", "--dsn", dsn, "--fail-on", "low")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "column_added" in result.stdout and "column_type_changed" in result.stdout
    assert app.execute("select version_num from public.alembic_version").fetchone() == ("a2",)


def test_schema_preview_records_nothing_and_keeps_the_ddl_pending(
    app: psycopg.Connection[Any],
) -> None:
    before = state(app)
    with app.transaction():
        app.execute("alter table users drop column legacy")
        first = app.execute("select resilience.schema_preview()").fetchone()
        assert first is not None and first[0]["preview"] is True
        app.execute("create index on users (email)")
        second = app.execute("select resilience.schema_preview()").fetchone()
        assert second is not None
    assert state(app)[0] == before[0] + 1  # the commit recorded one version, as usual
    committed = app.execute("select resilience.schema_changes_since(%s)", (before[0],)).fetchone()
    assert committed is not None
    from pgresilience.schema import ChangeList

    seen = ChangeList.from_row(second[0])
    recorded = ChangeList.from_row(committed[0])
    assert sorted(c["type"] for c in seen) == sorted(c["type"] for c in recorded) == [
        "column_dropped", "index_added"
    ]  # fmt: skip
    assert len(ChangeList.from_row(first[0])) == 1
    # Outside any DDL: no change.
    empty = app.execute("select resilience.schema_preview()").fetchone()
    assert empty is not None and empty[0]["changes"] == [] and empty[0]["version"] == before[0] + 1


def test_a_preview_left_open_does_not_hold_up_other_migrations(
    app: psycopg.Connection[Any], dsn: str
) -> None:
    """The preview's fold (and its lock) is rolled back with its subtransaction."""
    with app.transaction():
        app.execute("alter table users add column bio text")
        app.execute("select resilience.schema_preview()")
        with psycopg.connect(dsn, autocommit=True) as other:
            before = other.execute("select max(version) from resilience.schema_versions").fetchone()
            other.execute("set lock_timeout = '3s'")
            other.execute("create table elsewhere (id int)")
            after = other.execute("select max(version) from resilience.schema_versions").fetchone()
        assert before is not None and after is not None and after[0] == before[0] + 1
