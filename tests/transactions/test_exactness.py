"""Exact rollback (issue 10, item 2): after a logical rollback every row's
`row::text` is identical to before, for every awkward type, when the writes
were captured under one set of session settings (TimeZone, IntervalStyle,
DateStyle, bytea_output, extra_float_digits) and rolled back under another.
A rollback over rows nobody else touched never reports a conflict, whatever
the settings.

Each family: rows seeded with exact SQL literals; inside a logical
transaction (session A) every row is updated to another awkward value by a
header-mode write, one row is deleted through tx_execute, one inserted by a
header-mode write; then tx_rollback from session B."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from .typed_values import (
    KINDS,
    SESSION_A,
    SESSION_B,
    SHARED_TYPES,
    apply_session,
    incompressible,
    rows_text,
)

# family -> (column type, literals). The first literals are seeded; the
# updates rotate them; None is SQL NULL.
FAMILIES: dict[str, tuple[str, list[str | None]]] = {
    "json_key_order_duplicates_whitespace": (
        "json",
        ['{"b": 1, "a": 2}', '{"a":1,"a":2}', " [ 1,2 ,  3 ] ", '{"x" : {"z":null}}  ', "null"],
    ),
    "jsonb_json_null_vs_sql_null": ("jsonb", ["null", None, '{"k": null}', '"null"', "[null]"]),
    "jsonb_json_null_not_null_column": ("jsonb not null", ["null", '{"a": 1}', "null", "0"]),
    "float4_specials": ("real", ["-0", "NaN", "Infinity", "-Infinity", "0.1", "1.17549435e-38"]),
    "float8_specials": (
        "double precision",
        ["-0", "NaN", "Infinity", "-Infinity", "0.1", "2.2250738585072014e-308"],
    ),
    "numeric_nan_and_scale": ("numeric", ["NaN", "1.50", "1.5000", "-0.0", "1e-20", "100"]),
    "numeric_typmod": ("numeric(12, 4)", ["1.5", "-0.0001", "NaN", "99999999.9999"]),
    "timestamptz": (
        "timestamptz",
        ["2026-01-01 10:00:00.123456+05:30", "infinity", "-infinity", "1999-12-31 23:59:59-08"],
    ),
    "timestamp_without_tz": ("timestamp", ["2026-01-01 10:00:00.5", "infinity", "2000-02-29"]),
    "interval": ("interval", ["1 year 2 mons -3 days 04:05:06.7", "-1 day", "0", "36 hours"]),
    "date": ("date", ["2026-02-28", "infinity", "0099-01-01 BC", "2000-01-01"]),
    "bytea": ("bytea", ["\\x00ff", "\\x", "\\x5c27", "\\xdeadbeef"]),
    "time_with_tz": ("timetz", ["10:00:00+05:30", "23:59:59.999999-12"]),
    "text_array": ("text[]", ['{a,"b c",NULL}', "{}", '{"x\\"y"}', "{{a,b},{c,d}}"]),
    "int_array_bounds": ("integer[]", ["[0:1]={5,6}", "{{1,2},{3,4}}", "{NULL}", "{}"]),
    "composite": ("oracle_types.pair", ['(1,"x y")', "(,)", '(2,"")', None]),
    "composite_array": ("oracle_types.pair[]", ['{"(1,a)","(,)"}', "{}"]),
    "domain_with_check": ("oracle_types.posint", ["1", "5", "2147483647"]),
    "range": ("int4range", ["[1,5)", "empty", "(,)", "[3,3]"]),
    "tstzrange": ("tstzrange", ['["2026-01-01 00:00+00","2026-01-02 00:00+00")', "empty", "(,)"]),
    "numrange": ("numrange", ["[1.50,2.500)", "(,1.0]"]),
    "enum": ("oracle_types.mood", ["happy", "sad", "ok"]),
    "toast_compressible": ("text", ["x" * 5000, "y" * 300_000, "short"]),
    "toast_incompressible": ("text", [incompressible(1), incompressible(2, 20_000), ""]),
    "toast_bytea": ("bytea", ["\\x" + incompressible(3, 8000), "\\x" + "00" * 10_000]),
    "toast_jsonb": ("jsonb", [json.dumps({"k": incompressible(4)}), json.dumps(list(range(2000)))]),
}


@pytest.fixture
def settings_conns(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
    """`capture` runs under SESSION_A, `control` (rollback) under SESSION_B,
    `conn` (comparison) under the server defaults."""
    conn.execute(SHARED_TYPES)
    capture = psycopg.connect(dsn, autocommit=True)
    control = psycopg.connect(dsn, autocommit=True)
    apply_session(capture, SESSION_A)
    apply_session(control, SESSION_B)
    yield {"capture": capture, "control": control, "conn": conn}
    capture.close()
    control.close()


def begin(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select resilience.tx_begin(600000)").fetchone()
    assert row is not None
    return str(row[0])


def header_write(conn: psycopg.Connection[Any], tx: str, statement: sql.Composable) -> None:
    """A PostgREST-style write, captured through header x-resilience-tx."""
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)", (json.dumps({"x-resilience-tx": tx}),)
        )
        conn.execute(statement)


def execute(
    conn: psycopg.Connection[Any], tx: str, table: str, operation: str, data: Any, match: Any
) -> dict[str, Any]:
    row = conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
        (tx, table, operation, None if data is None else Jsonb(data), Jsonb(match)),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def rollback(conn: psycopg.Connection[Any], tx: str) -> dict[str, Any]:
    """tx_rollback without force: a conflict here is a false one (no drift)."""
    row = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rollback_restores_every_row_exactly(settings_conns, family):
    conn, capture, control = (settings_conns[k] for k in ("conn", "capture", "control"))
    type_sql, literals = FAMILIES[family]
    conn.execute(
        sql.SQL(
            "create table exact (id integer primary key, v {}, tail text default 'end')"
        ).format(sql.SQL(type_sql))
    )
    conn.execute("select resilience.manage_table('exact')")
    for i, literal in enumerate(literals):
        conn.execute("insert into exact (id, v) values (%s, %s)", (i, literal))
    before = rows_text(conn, "public", "exact")

    tx = begin(capture)
    for i in range(len(literals)):
        header_write(
            capture,
            tx,
            sql.SQL("update exact set v = {}, tail = 'changed' where id = {}").format(
                sql.Literal(literals[(i + 1) % len(literals)]), sql.Literal(i)
            ),
        )
    execute(capture, tx, "exact", "delete", None, {"id": 0})
    header_write(
        capture,
        tx,
        sql.SQL("insert into exact (id, v) values (100, {})").format(sql.Literal(literals[0])),
    )
    assert rows_text(conn, "public", "exact") != before

    result = rollback(control, tx)
    assert result["status"] == "rolled_back" and result["conflicts"] == []
    assert rows_text(conn, "public", "exact") == before


def test_dropped_column_and_key_not_first(settings_conns):
    conn, capture, control = (settings_conns[k] for k in ("conn", "capture", "control"))
    conn.execute("""
        create table dropped (gone1 text, v double precision, gone2 int, j json,
                              id text primary key, tail jsonb);
        insert into dropped values ('x', '-0', 1, '{"b":1,"a":1}', 'k1', 'null'),
                                   ('y', 'NaN', 2, ' [ ] ', 'k2', null);
        alter table dropped drop column gone1;
        alter table dropped drop column gone2;
        select resilience.manage_table('dropped');
    """)
    before = rows_text(conn, "public", "dropped")
    tx = begin(capture)
    header_write(capture, tx, sql.SQL("update dropped set v = 1, j = '[]', tail = '{}'"))
    execute(capture, tx, "dropped", "delete", None, {"id": "k2"})
    header_write(capture, tx, sql.SQL("insert into dropped (id, v) values ('k3', '-Infinity')"))
    assert rollback(control, tx)["conflicts"] == []
    assert rows_text(conn, "public", "dropped") == before


def test_a_column_added_and_dropped_while_rows_are_captured(settings_conns):
    conn, capture, control = (settings_conns[k] for k in ("conn", "capture", "control"))
    conn.execute("""
        create table reshaped (id integer primary key, v real);
        insert into reshaped values (1, '-0'), (2, 'NaN');
        select resilience.manage_table('reshaped');
        alter table reshaped add column extra json default '{"b":1,"a":2}';
        alter table reshaped drop column extra;
        alter table reshaped add column late interval default '1 mon -1 day';
    """)
    before = rows_text(conn, "public", "reshaped")
    tx = begin(capture)
    header_write(capture, tx, sql.SQL("update reshaped set v = 1, late = '2 days'"))
    assert rollback(control, tx)["conflicts"] == []
    assert rows_text(conn, "public", "reshaped") == before


def test_composite_key_updated_including_a_key_column(settings_conns):
    conn, capture, control = (settings_conns[k] for k in ("conn", "capture", "control"))
    conn.execute("""
        create table pairs (v numeric, b text, a integer, primary key (a, b));
        insert into pairs values ('1.50', 'x', 1), ('NaN', 'y', 1), ('-0.0', 'x', 2);
        select resilience.manage_table('pairs');
    """)
    before = rows_text(conn, "public", "pairs")
    tx = begin(capture)
    # Two keys changed in one statement, one through tx_execute, then a delete.
    header_write(capture, tx, sql.SQL("update pairs set b = b || '2' where a = 1"))
    execute(capture, tx, "pairs", "update", {"a": 3, "v": "2.000"}, {"a": 2, "b": "x"})
    execute(capture, tx, "pairs", "delete", None, {"a": 1, "b": "x2"})
    header_write(capture, tx, sql.SQL("insert into pairs values (7, 'x', 2)"))
    assert rollback(control, tx)["conflicts"] == []
    assert rows_text(conn, "public", "pairs") == before


def test_no_false_conflict_under_other_settings_with_savepoints(settings_conns):
    """Every type in one table: rollback_to and rollback from session B over
    rows captured in session A, nothing else changed: no conflict."""
    conn, capture, control = (settings_conns[k] for k in ("conn", "capture", "control"))
    kinds = [k for k in sorted(KINDS) if k != "posint"]
    conn.execute(
        sql.SQL("create table wide (id integer primary key, {})").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(KINDS[k].type_sql))
                for k in kinds
            )
        )
    )
    conn.execute("select resilience.manage_table('wide')")
    for row in range(3):
        conn.execute(
            sql.SQL("insert into wide values ({}, {})").format(
                sql.Literal(row),
                sql.SQL(", ").join(
                    sql.Literal(KINDS[k].literals[row % len(KINDS[k].literals)]) for k in kinds
                ),
            )
        )
    before = rows_text(conn, "public", "wide")
    tx = begin(capture)
    header_write(capture, tx, sql.SQL("update wide set id = id + 10"))
    middle = rows_text(conn, "public", "wide")
    control.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    header_write(capture, tx, sql.SQL("update wide set id = id + 10"))
    execute(capture, tx, "wide", "delete", None, {"id": 11})
    control.execute("select resilience.tx_rollback_to(%s, 'sp')", (tx,))
    assert rows_text(conn, "public", "wide") == middle
    assert rollback(control, tx)["conflicts"] == []
    assert rows_text(conn, "public", "wide") == before
