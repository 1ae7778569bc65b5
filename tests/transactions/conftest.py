"""Fixtures for logical transactions: an app schema with managed tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

APP_SCHEMA = """
create type mood as enum ('happy', 'sad');
create table users (
    id bigint generated always as identity primary key,
    name text not null,
    email text default 'nobody@example.com',
    tags text[],
    meta jsonb,
    feeling mood,
    seen_at timestamptz,
    balance numeric(12, 2) default 0,
    avatar bytea,
    shout text generated always as (upper(name)) stored
);
create table profiles (
    id serial primary key,
    user_id bigint not null references users (id) on delete cascade,
    bio text not null check (bio <> '')
);
create table codes (code text primary key, label text);
create table no_pk (x int);
select resilience.manage_table('users');
select resilience.manage_table('profiles');
select resilience.manage_table('codes');
"""


@pytest.fixture
def app(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with tables users, profiles (FK on delete cascade) and codes
    managed, and no_pk (no primary key) unmanaged."""
    conn.execute(APP_SCHEMA)
    return conn


@pytest.fixture
def api(app: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``app`` as PostgREST's `authenticated` role sees it: only the
    application's own grants (the installer gave `authenticated`, NOINHERIT
    on Supabase, everything resilience_user may do)."""
    app.execute("""
        grant usage on schema public to authenticated;
        grant all on users, profiles, codes to authenticated;
        grant usage on all sequences in schema public to authenticated;
        insert into codes values ('a', 'A');
    """)
    return app


def request(
    conn: psycopg.Connection[Any],
    sub: str,
    statement: str,
    tx: str | None = None,
    params: Any = None,
    *,
    method: str = "POST",
    pre_request: bool = False,
) -> Any:
    """One PostgREST request, as PostgREST runs it: its own database
    transaction, `set local role authenticated`, the JWT claims, method and
    headers set with set_config(..., true), the db-pre-request function when
    one is configured, then the request's statement."""
    headers = {"accept": "application/json"}
    if tx is not None:
        headers["x-resilience-tx"] = tx
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true),"
            " set_config('request.method', %s, true),"
            " set_config('request.headers', %s, true)",
            (json.dumps({"sub": sub, "role": "authenticated"}), method, json.dumps(headers)),
        )
        if pre_request:
            conn.execute("select resilience.tx_pre_request()")
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def begin_as(conn: psycopg.Connection[Any], sub: str, timeout_ms: int = 30000) -> str:
    """tx_begin through a PostgREST request by JWT subject ``sub``."""
    return str(request(conn, sub, "select resilience.tx_begin(%s)", params=(timeout_ms,))[0][0])


def table_rows(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as jsonb (exact values), ordered by primary key."""
    statement = sql.SQL("select to_jsonb(t) from {} as t order by 1")
    rows = conn.execute(statement.format(sql.Identifier(*table.split(".")))).fetchall()
    return [r[0] for r in rows]


def begin(conn: psycopg.Connection[Any], timeout_ms: int = 30000) -> str:
    return str(conn.execute("select resilience.tx_begin(%s)", (timeout_ms,)).fetchone()[0])  # type: ignore[index]


def execute(
    conn: psycopg.Connection[Any],
    tx: str,
    table: str,
    operation: str,
    data: Any = None,
    match: Any = None,
) -> dict[str, Any]:
    row = conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
        (
            tx,
            table,
            operation,
            None if data is None else Jsonb(data),
            None if match is None else Jsonb(match),
        ),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def call(conn: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    placeholders = ", ".join(["%s"] * len(args))
    row = conn.execute(f"select resilience.{function}({placeholders})", args).fetchone()
    assert row is not None
    return row[0]


Snapshot = Callable[[], dict[str, list[dict[str, Any]]]]


@pytest.fixture
def snapshot(app: psycopg.Connection[Any]) -> Snapshot:
    """Every app table's exact content, to compare before and after."""

    def take() -> dict[str, list[dict[str, Any]]]:
        return {t: table_rows(app, t) for t in ("users", "profiles", "codes")}

    return take
