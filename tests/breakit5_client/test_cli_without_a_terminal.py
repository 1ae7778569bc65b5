"""The command as CI and cron run it: no terminal, stdin from /dev/null, the
database given by --dsn or $DATABASE_URL. Every failure is one line on stderr
with its documented exit code (docs/cli.md), never a hang; --json is JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import COMMAND, child_env, run_bounded

UNREACHABLE = "host=127.0.0.1 port=1 user=nobody dbname=nothing connect_timeout=5"
EVERY_DSN_COMMAND = (["install"], ["uninstall"], ["status"], ["watch"], ["plan", "m.sql"])


@pytest.fixture
def migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.sql"
    path.write_text("create table planned (id int primary key);\n")
    return path


def test_debug_before_the_command_shows_the_traceback(migration: Path) -> None:
    # `pgresilience --debug COMMAND`, as the top-level help offers it.
    ran = run_bounded([COMMAND, "--debug", "status", "--dsn", UNREACHABLE])
    assert ran.returncode == 3
    assert "Traceback" in ran.stderr
    quiet = run_bounded([COMMAND, "status", "--dsn", UNREACHABLE])
    assert quiet.returncode == 3
    assert "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", EVERY_DSN_COMMAND, ids=lambda c: c[0])
@pytest.mark.parametrize("conninfo", ["not a conninfo", "postgresql://[::1"])
def test_a_conninfo_that_does_not_parse_is_a_usage_error(
    migration: Path, command: list[str], conninfo: str
) -> None:
    by_option = run_bounded([COMMAND, *command, "--dsn", conninfo])
    by_environment = run_bounded([COMMAND, *command], env=child_env(DATABASE_URL=conninfo))
    for ran in (by_option, by_environment):
        assert ran.returncode == 2, ran.stderr
        assert ran.stdout == ""
        assert len(ran.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", EVERY_DSN_COMMAND, ids=lambda c: c[0])
def test_an_unreachable_server_is_a_connection_error(migration: Path, command: list[str]) -> None:
    ran = run_bounded([COMMAND, *command, "--dsn", UNREACHABLE])
    assert ran.returncode == 3, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1


def test_on_a_database_without_the_package(bare_dsn: str, migration: Path) -> None:
    status = run_bounded([COMMAND, "status", "--dsn", bare_dsn])
    assert status.returncode == 5, status.stderr
    uninstall = run_bounded([COMMAND, "uninstall", "--dsn", bare_dsn])
    assert uninstall.returncode == 0, uninstall.stderr
    # plan: "2 when ... the preview cannot run", and still JSON for CI
    plan = run_bounded([COMMAND, "plan", "--json", "--dsn", bare_dsn, str(migration)])
    assert plan.returncode == 2
    report = json.loads(plan.stdout)
    assert (report["ok"], report["exit_code"], report["error"]["sqlstate"]) == (False, 2, "3F000")
    # watch must end with an error, not wait for versions that never come
    watch = run_bounded([COMMAND, "watch", "--dsn", bare_dsn], timeout=60)
    assert watch.returncode != 0
    assert len(watch.stderr.strip().splitlines()) == 1


def test_plan_json_is_json_whatever_the_migration_does(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute("create table kept (id int primary key, note text)")
    conn.execute("select resilience.schema_refresh()")
    cases = {
        "adds.sql": ("create table a (id int primary key);", 0, True),
        "fails.sql": ("create table b (id int primary key); select 1/0;", 2, False),
        "commits.sql": ("create table c (id int primary key); commit;", 2, False),
        "empty.sql": ("", 0, True),
        "talks.sql": (
            "do $$ begin raise notice 'hello'; raise warning 'careful'; end $$;"
            " create table e (id int primary key);",
            0,
            True,
        ),
        "drops.sql": ("alter table kept drop column note;", 1, True),
    }
    for name, (text, code, ok) in cases.items():
        (tmp_path / name).write_text(text)
        ran = run_bounded([COMMAND, "plan", "--json", "--dsn", dsn, str(tmp_path / name)])
        assert ran.returncode == code, (name, ran.stderr)
        report = json.loads(ran.stdout)
        assert (report["ok"], report["exit_code"]) == (ok, code), name
    # nothing of any plan was committed
    tables = conn.execute(
        "select array_agg(relname::text order by relname) from pg_class"
        " where relnamespace = 'public'::regnamespace and relkind = 'r'"
    ).fetchone()
    assert tables == (["kept"],)
    columns = conn.execute(
        "select count(*) from pg_attribute where attrelid = 'kept'::regclass"
        " and attnum > 0 and not attisdropped"
    ).fetchone()
    assert columns == (2,)


def test_watch_ends_when_its_reader_goes_away(dsn: str, conn: psycopg.Connection[Any]) -> None:
    # `pgresilience watch | head -n 1`: once head has its line, watch must end
    process = subprocess.Popen(
        [COMMAND, "watch", "--dsn", dsn],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert "watching schema changes" in process.stdout.readline()
        process.stdout.close()
        for i in range(3):
            conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(f"piped_{i}")))
            if process.poll() is not None:
                break
            time.sleep(0.5)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_print_sql_into_a_reader_that_stops_early() -> None:
    script = run_bounded(
        ["bash", "-o", "pipefail", "-c", f"'{COMMAND}' install --print-sql | head -c 100"]
    )
    assert script.returncode == 0, script.stderr
    assert len(script.stdout) == 100
    assert script.stderr == ""


@pytest.mark.parametrize("command", EVERY_DSN_COMMAND, ids=lambda c: c[0])
def test_an_empty_dsn_option_never_falls_back_on_database_url(
    dsn: str, migration: Path, command: list[str]
) -> None:
    # `pgresilience uninstall --dsn "$STAGING_URL"` with STAGING_URL unset
    ran = run_bounded([COMMAND, *command, "--dsn", ""], env=child_env(DATABASE_URL=dsn))
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == ""
    status = run_bounded([COMMAND, "status", "--dsn", dsn])
    assert status.returncode == 0, "the database of $DATABASE_URL was changed"


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://app:s3cr3t-pw@[::1/db",
        "host=db user=app password=s3cr3t-pw dbname",
        "password=s3cr3t-pw host",
    ],
)
def test_a_conninfo_that_does_not_parse_is_never_echoed_with_its_password(conninfo: str) -> None:
    ran = run_bounded([COMMAND, "status", "--dsn", conninfo])
    assert ran.returncode == 2, ran.stderr
    assert "s3cr3t" not in ran.stderr
    assert "not a conninfo or URL" in ran.stderr
