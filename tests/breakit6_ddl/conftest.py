"""Helpers of the sixth review: DDL on managed tables while logical
transactions hold images of them (docs/transactions.md, "DDL on managed
tables"). Every call is one database transaction on an autocommit
connection, as a client's RPC call is; the tests assert SQLSTATEs and
exact rows (``row::text``), never messages or timings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb


def call(conn: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    """resilience.<function>(args...) -> its single value (dict/list args as jsonb)."""
    values = [Jsonb(a) if isinstance(a, dict | list) else a for a in args]
    statement = sql.SQL("select {}.{}({})").format(
        sql.Identifier("resilience"),
        sql.Identifier(function),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    row = conn.execute(statement, values).fetchone()
    assert row is not None
    return row[0]


def sqlstate_of(action: Callable[..., Any], *args: Any) -> str | None:
    """The SQLSTATE ``action(*args)`` failed with, or None when it succeeded."""
    try:
        action(*args)
    except psycopg.Error as error:
        return error.sqlstate
    return None


def rows_text(conn: psycopg.Connection[Any], *name: str) -> list[str]:
    """Every row of the table (schema-qualified when two names) as ``row::text``, sorted."""
    statement = sql.SQL("select t::text from {} as t order by 1").format(sql.Identifier(*name))
    return [r[0] for r in conn.execute(statement).fetchall()]


def without_event_triggers(conn: psycopg.Connection[Any]) -> None:
    """As on a non-superuser install: DDL regenerates nothing, the stored
    shape is compared at each captured statement (RZ007)."""
    conn.execute(
        "alter event trigger resilience_managed_ddl_end disable;"
        " alter event trigger resilience_managed_sql_drop disable"
    )
