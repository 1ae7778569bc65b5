"""The package means the same whatever `standard_conforming_strings` the
session has (a database or role may set it off for an old app): with it
off, a backslash in a plain '...' literal is an escape, so `'\\.'` in a
regular expression became `.` (any character) and `'pg\\_%'` a wildcard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
# A '...' literal (not E'...') holding a backslash, on a line that is not a comment.
PLAIN_LITERAL_WITH_BACKSLASH = re.compile(r"(?<![Ee'])'[^'\n]*\\[^'\n]*'")


def test_no_sql_of_the_package_has_a_backslash_in_a_plain_literal() -> None:
    files = [
        *ROOT.joinpath("sql").rglob("*.sql"),
        *ROOT.joinpath("alembic", "versions").glob("*.sql"),
        *ROOT.joinpath("python_client", "pgresilience", "queries").glob("*.sql"),
    ]
    assert files
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("--") and PLAIN_LITERAL_WITH_BACKSLASH.search(line)
    ]
    assert found == []


@pytest.fixture
def off(dsn: str, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A session of the database with standard_conforming_strings off by default."""
    conn.execute(
        sql.SQL("alter database {} set standard_conforming_strings = off").format(
            sql.Identifier(conn.info.dbname)
        )
    )
    session = psycopg.connect(dsn, autocommit=True)
    assert session.execute("show standard_conforming_strings").fetchone() == ("off",)
    return session


def test_with_standard_conforming_strings_off_the_package_reads_names_as_with_it_on(
    off: psycopg.Connection[Any],
) -> None:
    with off:
        # A schema named like pg_temp is not one.
        off.execute("create schema pgxtemp; create table pgxtemp.t (id int primary key, v text)")
        off.execute("select resilience.manage_table('pgxtemp.t')")
        # A $ref is <index>.<column>: '0xv' is no reference.
        ops = [
            {"table": "pgxtemp.t", "operation": "insert", "data": {"id": 1, "v": "a"}},
            {"table": "pgxtemp.t", "operation": "insert", "data": {"id": 2, "v": {"$ref": "0xv"}}},
        ]
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid \\$ref"):
            off.execute("select resilience.tx_run(%s::jsonb)", (json.dumps(ops),))
        # A schema named like pg_* (but not) is tracked as any other.
        off.execute("create schema pgxapp; create table pgxapp.t (id int)")
        tables = off.execute("select resilience.schema_current() -> 'tables'").fetchone()
        assert tables is not None and "pgxapp.t" in json.dumps(tables[0]), tables
