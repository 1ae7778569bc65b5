"""Hostile table names on the fast path: quotes, case, unicode, 63 bytes."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _one(conn: psycopg.Connection[Any], stem: str) -> None:
    names = {kind: (stem + kind)[-63:] if len(stem) > 50 else stem + kind for kind in ("F", "S")}
    seen = {}
    for kind, name in names.items():
        ident = sql.Identifier(name)
        conn.execute(
            sql.SQL(
                "create table {} (id int generated always as identity primary key,"
                ' "Col" text, "p_data" int default 4)'
            ).format(ident)
        )
        conn.execute("select resilience.manage_table(%s::regclass)", (_quoted(name),))
        if kind == "S":
            conn.execute(
                "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
                " where relation = %s::regclass",
                (_quoted(name),),
            )
        tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        out = []
        for data in [
            {"Col": "a", "p_data": 1},
            {"Col": "b"},
            {"col": "c"},
            {"Col": "d", "p_data": "x"},
        ]:
            try:
                r = conn.execute(
                    "select resilience.tx_execute(%s, %s, 'insert', %s)",
                    (tx, _quoted(name), Jsonb(data)),
                ).fetchone()[0]  # type: ignore[index]
            except psycopg.Error as error:
                r = ("error", error.sqlstate)
            out.append(r)
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
        left = conn.execute(sql.SQL("select count(*) from {}").format(ident)).fetchone()[0]  # type: ignore[index]
        seen[kind] = (out, left)
    assert seen["F"] == seen["S"]
    assert seen["F"][0][0]["count"] == 1 and seen["F"][1] == 0


def test_hostile_table_names(conn: psycopg.Connection[Any]) -> None:
    for stem in ('We"ird ✓', "UPPER", "select", "x" * 58):
        _one(conn, stem)
