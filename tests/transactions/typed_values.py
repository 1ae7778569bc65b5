"""Column types whose values are hard to restore exactly (issue 10, item 2),
and hostile names, shared by the oracle and the exactness tests.

A value is kept in two forms: ``literal``, the SQL text input (written by
plain SQL, so it reaches the column exactly as PostgreSQL parses it: json key
order, duplicate keys and whitespace, jsonb `null`, `-0`), and ``data``, what
a client passes in ``tx_execute``'s jsonb (a JSON string holding the text
input, or the JSON value itself for json/jsonb columns)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

# Types shared by every generated schema (created once per database).
SHARED_TYPES = """
create schema if not exists oracle_types;
create type oracle_types.pair as (a integer, b text);
create type oracle_types.mood as enum ('happy', 'sad', 'ok');
create domain oracle_types.posint as integer check (value > 0);
"""


def incompressible(seed: int, size: int = 4000) -> str:
    """A text that pglz cannot compress (TOASTed out of line, uncompressed)."""
    out = []
    block = str(seed).encode()
    while sum(len(b) for b in out) < size:
        block = hashlib.sha256(block).digest()
        out.append(block.hex())
    return "".join(out)[:size]


@dataclass(frozen=True)
class Kind:
    """A column type and some of its awkward values (SQL text input)."""

    name: str
    type_sql: str
    literals: tuple[str, ...] = field(repr=False)

    def __repr__(self) -> str:
        return self.name

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.name)  # hypothesis prints failing examples with this

    def data(self, literal: str | None) -> Any:
        """The value as a tx_execute client sends it in jsonb."""
        if literal is None:
            return None
        if self.name in ("json", "jsonb"):
            return json.loads(literal)
        if self.name == "int":
            return int(literal)
        return literal


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("int", "integer", ("0", "1", "7", "-3")),
        Kind("text", "text", ("", "a", "it's", 'say "hi"', "ünï\\code", " spaced ")),
        Kind(
            "json",
            "json",
            ('{"b": 1, "a": 2}', '{"a":1,"a":2}', " [ 1,2 ,  3 ] ", '{"x" : {"z":null,"y":1.0}}'),
        ),
        Kind("jsonb", "jsonb", ("null", '{"k": 1}', '[1, "two", null]', '"s"', "1.50", "{}")),
        Kind("float4", "real", ("-0", "NaN", "Infinity", "-Infinity", "0.1", "1e30")),
        Kind(
            "float8",
            "double precision",
            ("-0", "NaN", "Infinity", "-Infinity", "0.1", "3.141592653589793"),
        ),
        Kind("numeric", "numeric", ("NaN", "1.50", "1.5000", "-0.0", "123456789.000000001")),
        Kind(
            "timestamptz",
            "timestamp with time zone",
            ("2026-01-01 10:00:00.123456+05:30", "infinity", "1999-12-31 23:59:59-08"),
        ),
        Kind("interval", "interval", ("1 year 2 mons -3 days 04:05:06.7", "-1 day", "0")),
        Kind("date", "date", ("2026-02-28", "infinity", "0099-01-01 BC")),
        Kind("bytea", "bytea", ("\\x00ff", "\\x", "\\x5c27")),
        Kind("textarr", "text[]", ('{a,"b c",NULL}', "{}", '{"x\\"y"}')),
        Kind("intarr", "integer[]", ("{{1,2},{3,4}}", "[0:1]={5,6}", "{NULL}")),
        Kind("pair", "oracle_types.pair", ('(1,"x y")', "(,)", '(2,"")')),
        Kind("posint", "oracle_types.posint", ("1", "5", "0")),
        Kind("range", "int4range", ("[1,5)", "empty", "(,)", "[3,3]")),
        Kind("tsrange", "tstzrange", ('["2026-01-01 00:00+00","2026-01-02 00:00+00")', "empty")),
        Kind("mood", "oracle_types.mood", ("happy", "sad")),
        Kind(
            "big",
            "text",
            ("x" * 5000, incompressible(1), incompressible(2), "short"),
        ),
    )
}

# Names a user may pick that our generated SQL might also use, reserved
# words, quotes, spaces, unicode, and a 63-byte name (the longest allowed).
HOSTILE_NAMES = (
    "n",
    "o",
    "w",
    "t",
    "d",
    "m",
    "k",
    "r",
    "id",
    "key",
    "seq",
    "tx_id",
    "relation",
    "old_rows",
    "new_rows",
    "data",
    "match",
    "select",
    "from",
    "user",
    "order",
    "row",
    "a b",
    'q"t',
    "it's",
    "ünïcødé",
    "Upper",
    "x" * 63,
)


def qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def rows_text(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """Every row of the table as row::text, sorted: the exact comparison."""
    statement = sql.SQL("select t::text from {} as t order by 1").format(qualified(schema, table))
    return [r[0] for r in conn.execute(statement).fetchall()]


# Settings that change the text form of values: capture and rollback run
# under different ones.
SESSION_A = {
    "TimeZone": "Asia/Kolkata",
    "IntervalStyle": "sql_standard",
    "DateStyle": "SQL, DMY",
    "bytea_output": "escape",
    "extra_float_digits": "-15",
}
SESSION_B = {
    "TimeZone": "America/St_Johns",
    "IntervalStyle": "iso_8601",
    "DateStyle": "German",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}


def apply_session(conn: psycopg.Connection[Any], settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.execute("select set_config(%s, %s, false)", (name, value))
