"""Any name PostgreSQL allows works in every path (issue 10, item 3).

The managed tables' columns are named after EVERY identifier-like token our
own SQL uses (collected from sql/*.sql when the test runs, keywords
included, so it stays true as the SQL changes), plus reserved words, quotes,
spaces, punctuation, unicode and 63-byte names. The names are split over
several tables (a table has at most 1600 columns, and image tables add a few
of their own), each with a hostile table name and a hostile key column.

Every path runs on every table: capture through tx_execute and header mode,
the plain-write guard (55P03 on a claimed row), tx_execute's result rows
(objects keyed by exactly the table's columns), exact rollback, tx_run with
insert/upsert/update/delete, and lock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from .conftest import begin, call

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

EXTRA_NAMES = [
    # reserved and special words
    "select",
    "from",
    "where",
    "table",
    "order",
    "group",
    "user",
    "current_user",
    "all",
    "and",
    "or",
    "not",
    "null",
    "true",
    "false",
    "case",
    "end",
    "default",
    "primary",
    "references",
    "returning",
    "excluded",
    "old",
    "new",
    "tg_op",
    "xmin_",
    # quotes, spaces, punctuation, format() and placeholder look-alikes
    'a"b',
    '"',
    '""',
    "'",
    "it's",
    "a b",
    " leading",
    "trailing ",
    "a.b",
    "a,b",
    "(x)",
    "a;b",
    "--c",
    "/*c*/",
    "$1",
    "%I",
    "%s",
    "%%",
    "\\",
    "tab\tname",
    # case and unicode
    "ID",
    "Key",
    "ünïcødé",
    "名前",
    "🙂",
    # 63 bytes, the longest name: ASCII and multibyte
    "n" * 63,
    "é" * 31 + "x",
]

TABLE_NAMES = ["select", 'ta"ble', "n", "w o", "ünï", "t" * 63, "excluded", "new_rows"]
COLUMNS_PER_TABLE = 300


# System columns: PostgreSQL reserves these names in every table.
SYSTEM_COLUMNS = {"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"}


def collected_names() -> list[str]:
    """Every identifier-like token of sql/*.sql, keywords included."""
    found: set[str] = set()
    for path in sorted(SQL_DIR.rglob("*.sql")):
        found.update(re.findall(r"\b[a-z_][a-z0-9_]*\b", path.read_text()))
    return sorted(n for n in found if len(n.encode()) <= 63 and n not in SYSTEM_COLUMNS)


def all_names() -> list[str]:
    names = collected_names()
    return names + [n for n in EXTRA_NAMES if n not in names and n not in SYSTEM_COLUMNS]


def chunks() -> list[tuple[str, list[str]]]:
    """(table name, column names) with the first column as the key."""
    names = all_names()
    parts = [names[i : i + COLUMNS_PER_TABLE] for i in range(0, len(names), COLUMNS_PER_TABLE)]
    if len(parts) > 1 and len(parts[-1]) == 1:  # every table needs a column beside its key
        parts[-2] += parts.pop()
    tables = TABLE_NAMES + [f"more {i}" for i in range(len(parts) - len(TABLE_NAMES))]
    return list(zip(tables, parts, strict=False))


def test_the_names_cover_our_sql():
    names = collected_names()
    # the aliases and names our generated SQL has used or uses
    for word in ("n", "o", "w", "t", "d", "m", "k", "r", "rows_json", "tx_id", "relation"):
        if re.search(rf"\b{word}\b", " ".join(p.read_text() for p in SQL_DIR.rglob("*.sql"))):
            assert word in names
    assert len(names) > 200


def qualified(table: str) -> str:
    return sql.SQL("public.{}").format(sql.Identifier(table)).as_string(None)


def create(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> None:
    key, *rest = columns
    conn.execute(
        sql.SQL("create table {} ({} integer primary key, {})").format(
            sql.Identifier(table),
            sql.Identifier(key),
            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in rest),
        )
    )
    conn.execute("select resilience.manage_table(%s::regclass)", (qualified(table),))
    for k in (1, 2):
        conn.execute(
            sql.SQL("insert into {} values ({}, {})").format(
                sql.Identifier(table),
                sql.Literal(k),
                sql.SQL(", ").join(sql.Literal(f"{k}:{i}") for i in range(len(rest))),
            )
        )


def rows_text(conn: psycopg.Connection[Any], table: str) -> list[str]:
    statement = sql.SQL("select t::text from {} as t order by 1").format(sql.Identifier(table))
    return [r[0] for r in conn.execute(statement).fetchall()]


def tx_execute(
    conn: psycopg.Connection[Any], tx: str, table: str, operation: str, data: Any, match: Any
) -> dict[str, Any]:
    row = conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
        (
            tx,
            qualified(table),
            operation,
            None if data is None else Jsonb(data),
            None if match is None else Jsonb(match),
        ),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def assert_rows(result: dict[str, Any], columns: list[str], count: int) -> list[dict[str, Any]]:
    """tx_execute / tx_run rows: objects keyed by exactly the table's columns."""
    assert result["count"] == count
    for row in result["data"]:
        assert isinstance(row, dict), row
        assert sorted(row) == sorted(columns)
    return result["data"]  # type: ignore[no-any-return]


@pytest.fixture
def tables(conn: psycopg.Connection[Any]) -> list[tuple[str, list[str]]]:
    made = chunks()
    for table, columns in made:
        create(conn, table, columns)
    return made


def test_capture_guard_results_and_exact_rollback(conn, dsn, tables):
    before = {t: rows_text(conn, t) for t, _ in tables}
    tx = begin(conn)
    with psycopg.connect(dsn, autocommit=True) as other:
        for table, columns in tables:
            key, *rest = columns
            row = {key: 3} | {c: f"new {c}" for c in rest}
            [inserted] = assert_rows(tx_execute(conn, tx, table, "insert", row, None), columns, 1)
            assert inserted == row
            changes = {c: f"upd {c}" for c in rest}
            [updated] = assert_rows(
                tx_execute(conn, tx, table, "update", changes, {key: 1}), columns, 1
            )
            assert updated == {key: 1} | changes
            # header mode: a plain UPDATE naming every column
            with conn.transaction():
                conn.execute(
                    "select set_config('request.headers', %s, true)",
                    (json.dumps({"x-resilience-tx": tx}),),
                )
                conn.execute(
                    sql.SQL("update {} set {} where {} = 3").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(
                            sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(f"hdr {c}"))
                            for c in rest
                        ),
                        sql.Identifier(key),
                    )
                )
            assert_rows(tx_execute(conn, tx, table, "delete", None, {key: 2}), columns, 1)
            [locked] = assert_rows(tx_execute(conn, tx, table, "lock", None, {key: 3}), columns, 1)
            assert locked[rest[0]] == f"hdr {rest[0]}"

            # the guard: every claimed row refuses a plain write, at once
            # (the deleted row's key refuses an insert)
            # Literals, no parameters: a name like "%I" must not read as a
            # placeholder.
            update = "update {} set {} = 'x' where {} = {}"
            insert = "insert into {} ({}) values ({})"
            for statement in (
                sql.SQL(update).format(
                    sql.Identifier(table), sql.Identifier(rest[-1]), sql.Identifier(key), 1
                ),
                sql.SQL(insert).format(sql.Identifier(table), sql.Identifier(key), 2),
                sql.SQL(update).format(
                    sql.Identifier(table), sql.Identifier(rest[-1]), sql.Identifier(key), 3
                ),
            ):
                with pytest.raises(psycopg.Error) as caught:
                    other.execute(statement)
                assert caught.value.sqlstate == "55P03", (table, str(caught.value))

    status = call(conn, "tx_status", tx)
    assert status["status"] == "active"
    result = call(conn, "tx_rollback", tx)
    assert result["conflicts"] == []
    assert {t: rows_text(conn, t) for t, _ in tables} == before


def test_tx_run_with_every_name(conn, tables):
    for table, columns in tables:
        key, *rest = columns
        target = qualified(table)
        operations = [
            {"table": target, "operation": "insert", "data": {key: 10} | {c: "i" for c in rest}},
            {"table": target, "operation": "upsert", "data": {key: 10} | {c: "u" for c in rest}},
            {"table": target, "operation": "upsert", "data": {key: 11, rest[0]: "fresh"}},
            {
                "table": target,
                "operation": "update",
                "data": {rest[-1]: "changed"},
                "match": {key: {"$ref": "2." + key} if "." not in key else 11},
            },
            {"table": target, "operation": "delete", "match": {key: 1}},
        ]
        row = conn.execute("select resilience.tx_run(%s)", (Jsonb(operations),)).fetchone()
        assert row is not None
        results = row[0]["results"]
        for result, count in zip(results, [1, 1, 1, 1, 1], strict=True):
            assert_rows(result, columns, count)
        assert results[1]["data"][0] == {key: 10} | {c: "u" for c in rest}
        final = conn.execute(
            sql.SQL("select to_jsonb(t.*) from {} as t where {} = 11").format(
                sql.Identifier(table), sql.Identifier(key)
            )
        ).fetchone()
        assert final is not None
        assert final[0][rest[0]] == "fresh" and final[0][rest[-1]] == "changed"


def test_tx_run_upsert_without_a_primary_key_is_a_documented_error(conn):
    conn.execute('create table nokey ("n" integer, "w" text)')
    operations = [{"table": "nokey", "operation": "upsert", "data": {"n": 1, "w": "x"}}]
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.tx_run(%s)", (Jsonb(operations),))
    # never generated SQL failing (42601 and other class 42 syntax errors)
    assert caught.value.sqlstate in ("22023", "0A000"), (caught.value.sqlstate, str(caught.value))
