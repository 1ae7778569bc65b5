"""The command as a user meets it: one-line errors with distinct exit codes
(no traceback without --debug), --version, a description for every
subcommand, status on a bare database, uninstall with active transactions,
demo never touching $DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgresilience import TransactionManager, __version__, cli
from pgresilience.cli import COMMANDS, EXIT_CODES

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pgresilience {__version__}"


def test_every_subcommand_has_a_description():
    for command in COMMANDS:
        result = run(command.name, "--help")
        assert result.returncode == 0
        flat = " ".join(result.stdout.split())
        assert " ".join(command.description.split()[:8]) in flat
    assert {c.name for c in COMMANDS} >= {"install", "uninstall", "status", "watch", "demo"}


def test_exit_codes_are_distinct_and_documented():
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert text == cli.cli_markdown()


def test_usage_error():
    line = one_line_error(run("status"), 2)
    assert "--dsn" in line and "DATABASE_URL" in line
    assert run("frobnicate").returncode == 2


@pytest.mark.parametrize("command", ["install", "uninstall", "status", "watch", "demo"])
def test_refused_connection(command):
    line = one_line_error(run(command, "--dsn", "host=127.0.0.1 port=9 connect_timeout=3"), 3)
    assert line.startswith(f"pgresilience {command}: cannot connect")


def test_unknown_role_and_database(server, bare_dsn):
    dbname = psycopg.conninfo.conninfo_to_dict(bare_dsn)["dbname"]
    one_line_error(run("install", "--dsn", server.dsn(dbname, user="no_such_role_x")), 3)
    one_line_error(run("status", "--dsn", server.dsn("no_such_database_x")), 3)


def test_missing_privilege(make_role):
    weak = make_role("pgr_cli_weak")
    line = one_line_error(run("install", "--dsn", weak), 4)
    assert line.startswith("pgresilience install: permission denied")
    debug = run("install", "--dsn", weak, "--debug")
    assert debug.returncode == 4 and "Traceback" in debug.stderr


def test_status_exits_non_zero_when_not_installed(bare_dsn):
    result = run("status", "--dsn", bare_dsn)
    assert result.returncode == 5
    assert "not installed" in result.stdout


def test_uninstall_refuses_while_transactions_are_active_unless_forced(dsn, conn):
    conn.execute("""
        create table wallets (id int primary key, balance int not null);
        insert into wallets values (1, 100);
        select resilience.manage_table('wallets');
    """)
    with TransactionManager(dsn) as tm:
        tx = tm.begin(timeout=600)
        tm.execute(tx, "wallets", "update", {"balance": 0}, match={"id": 1}).unwrap()
    line = one_line_error(run("uninstall", "--dsn", dsn), 6)
    assert "1 logical transactions are active" in line and "--force" in line
    assert conn.execute("select to_regnamespace('resilience') is not null").fetchone() == (True,)

    forced = run("uninstall", "--dsn", dsn, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "rolled back 1 active logical transactions first" in forced.stdout
    assert conn.execute("select balance from wallets").fetchone() == (100,)
    assert conn.execute("select to_regnamespace('resilience')").fetchone() == (None,)


def test_demo_ignores_database_url(monkeypatch):
    seen: list[object] = []
    monkeypatch.setenv("DATABASE_URL", "postgresql://somewhere/important")
    monkeypatch.setattr("pgresilience.demo.run_demo", lambda dsn, say: seen.append(dsn))
    assert cli.main(["demo"]) == 0
    assert seen == [None]
