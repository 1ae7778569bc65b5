"""A Supabase-style app (app/platform.sql, then app/migrations/*.sql) and the
helpers that run it as migration tools do: one client process per file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from breakit3.conftest import psql_binary

from pgresilience.cli import main as cli_main

APP = Path(__file__).parent / "app"
MIGRATIONS = sorted((APP / "migrations").glob("*.sql"))
CLI = [sys.executable, "-m", "pgresilience.cli"]


def psql(dsn: str, file: Path, *, single_transaction: bool = True, options: str = "") -> int:
    """Runs FILE in its own psql process (stops at the first error), returns the exit code."""
    env = dict(os.environ, PGOPTIONS=options)
    args = [psql_binary(), dsn, "-qX", "-v", "ON_ERROR_STOP=1"]
    if single_transaction:
        args.append("--single-transaction")
    done = subprocess.run(
        [*args, "-f", str(file)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        print(done.stderr)  # shown with a failing test
    return done.returncode


def runs_in_one_transaction(file: Path) -> bool:
    """CONCURRENTLY and a file with its own BEGIN run statement by statement."""
    text = file.read_text().lower()
    return "concurrently" not in text and "begin;" not in text


def last_version(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select coalesce(max(version), 0) from resilience.schema_versions")
        return int(row.fetchone()[0])  # type: ignore[index]


def versions_since(dsn: str, version: int) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("select x from resilience.schema_changes_since(%s) as x", (version,))
        return [r[0] for r in rows]


def records(changes: list[dict[str, Any]] | None) -> set[tuple[Any, ...]]:
    """(type, table or object, column, severity) of each change record."""
    return {
        (c["type"], c.get("table") or c.get("object"), c.get("column"), c["severity"])
        for c in changes or []
    }


def refresh(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("select resilience.schema_refresh()").fetchone()[0]  # type: ignore[index,no-any-return]


def current_hash(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("select resilience.schema_current() ->> 'hash'").fetchone()[0]  # type: ignore[index,no-any-return]


@dataclass
class Plan:
    exit_code: int
    report: dict[str, Any]


def plan(dsn: str, file: Path) -> Plan:
    """`pgresilience plan FILE --json`, run through the command's own `main`
    in this process: a replay plans dozens of files, and a Python process
    start per file was a third of its time. The command as a process of its
    own is tested in tests/test_cli.py and the plan tests."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["plan", str(file), "--json", "--dsn", dsn])
    text = out.getvalue()
    return Plan(code, json.loads(text) if text.strip() else {})
