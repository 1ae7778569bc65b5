"""`pgresilience plan FILE`: exit 0 below --fail-on, 1 at or above, 2 when
the migration fails or the file cannot be read; nothing is ever committed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience import cli


def plan(
    dsn: str, path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = cli.main(["plan", "--json", "--dsn", dsn, str(path), *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.fixture
def schema(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("create table t (a int primary key)")
    conn.execute("create table child (a int references t deferrable initially deferred)")
    return conn


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "select (select max(version) from resilience.schema_versions),"
        " (select array_agg(relname::text order by relname) from pg_class"
        "  where relnamespace = 'public'::regnamespace and relkind = 'r')"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_set_constraints_all_immediate_cannot_hide_a_drop(
    dsn: str, schema: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the fix: the fold at SET CONSTRAINTS failed and the plan
    exited 2; had it worked, the preview alone would have shown only the
    DDL after it (exit 0 for a migration that drops a table)."""
    before = state(schema)
    path = tmp_path / "m.sql"
    path.write_text("drop table child;\nset constraints all immediate;\ncreate table x (a int);\n")
    code, report = plan(dsn, path, capsys)
    assert (code, report["max_severity"]) == (1, "critical")
    assert {(c["type"], c["table"]) for c in report["changes"]} == {
        ("table_dropped", "public.child"),
        ("table_added", "public.x"),
    }
    assert state(schema) == before


def test_a_utf8_file_with_a_byte_order_mark_is_planned(
    dsn: str, schema: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bom.sql"
    path.write_bytes("\ufeffdrop table child;".encode())
    code, report = plan(dsn, path, capsys)
    assert (code, report["error"], report["max_severity"]) == (1, None, "critical")


@pytest.mark.parametrize(
    ("text", "code", "sqlstate"),
    [
        (b"", 0, None),
        (b"-- nothing\n/* at all */\n;;", 0, None),
        (b"create tabel x (a int);", 2, "42601"),
        (b"create table c1 (a int);\ncommit;\ndrop table t cascade;", 2, "0A000"),
        (b"do $$ begin create table dc (a int); commit; end $$;", 2, "2D000"),
        (b"create table rb (a int); rollback;", 2, "0A000"),
        (
            b"begin;\ncreate table w (a int);\ncommit;\nbegin;\ndrop table t cascade;\ncommit;",
            2,
            "0A000",
        ),
        (b"-- x\nBEGIN;\ndrop table child;\nCOMMIT;\n-- y\n", 1, None),
    ],
    ids=[
        "empty",
        "comments-only",
        "syntax-error",
        "commit-inside",
        "commit-in-do",
        "rollback-at-end",
        "two-wrapped-transactions",
        "wrapped",
    ],
)
def test_exit_codes_and_nothing_committed(
    dsn: str,
    schema: psycopg.Connection[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: bytes,
    code: int,
    sqlstate: str | None,
) -> None:
    before = state(schema)
    path = tmp_path / "m.sql"
    path.write_bytes(text)
    got, report = plan(dsn, path, capsys)
    assert (got, report["exit_code"]) == (code, code)
    assert (report["error"] or {}).get("sqlstate") == sqlstate
    assert state(schema) == before


def test_a_file_that_is_not_utf8_is_a_usage_error(
    dsn: str, schema: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(schema)
    path = tmp_path / "latin1.sql"
    path.write_bytes("create table café (a int);".encode("latin-1"))
    assert cli.main(["plan", "--dsn", dsn, str(path)]) == 2
    assert state(schema) == before


@pytest.mark.parametrize(("fail_on", "code"), [("critical", 1), ("low", 1)])
def test_fail_on_threshold_is_inclusive(
    dsn: str,
    schema: psycopg.Connection[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fail_on: str,
    code: int,
) -> None:
    path = tmp_path / "m.sql"
    path.write_text("drop table child;")
    assert plan(dsn, path, capsys, "--fail-on", fail_on)[0] == code


def test_a_medium_change_passes_the_default_gate(
    dsn: str, schema: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.sql"
    path.write_text("alter table child alter a set default 1; create index on child (a);")
    code, report = plan(dsn, path, capsys)
    assert (code, report["max_severity"]) == (0, "medium")
