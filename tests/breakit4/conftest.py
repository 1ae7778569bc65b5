"""Helpers of the fourth review's attacks on logical transactions.

Every helper calls the SQL API the way a client does: one call, one database
transaction (autocommit connections). ``outcome`` turns a call into either its
result or its SQLSTATE, so tests compare behaviour, never message text."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from transactions.conftest import begin as begin  # the same calls, one definition
from transactions.conftest import execute as execute


def call(conn: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    """resilience.<function>(args...) -> its single value."""
    statement = sql.SQL("select {}.{}({})").format(
        sql.Identifier("resilience"),
        sql.Identifier(function),
        sql.SQL(", ").join(sql.Placeholder() * len(args)),
    )
    row = conn.execute(statement, args).fetchone()
    assert row is not None
    return row[0]


def sqlstate_of(action: Any, *args: Any, **kwargs: Any) -> str | None:
    """Runs ``action``; the SQLSTATE it failed with, or None when it succeeded."""
    try:
        action(*args, **kwargs)
    except psycopg.Error as error:
        return error.sqlstate
    return None


def rows_text(conn: psycopg.Connection[Any], table: str, key: str = "1") -> list[str]:
    """Every row of ``table`` as ``row::text``, ordered by the key expression
    ``key`` (a trusted SQL fragment of the test, e.g. ``"id"``), not by ctid."""
    statement = sql.SQL("select t::text from {} as t order by {}").format(
        sql.Identifier(*table.split(".")), sql.SQL(key)
    )
    return [r[0] for r in conn.execute(statement).fetchall()]
