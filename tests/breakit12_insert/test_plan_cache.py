"""A session keeps the generated insert's plan: what a plan may fold
(functions labelled IMMUTABLE) must not outlive the call that saw it."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import make_twins


def _as(conn: psycopg.Connection[Any], sub: str, table: str, data: Any) -> Any:
    claims = json.dumps({"sub": sub, "role": "authenticated"})
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        try:
            with conn.transaction():
                return conn.execute(
                    "select resilience.tx_execute(%s, %s, 'insert', %s)", (tx, table, Jsonb(data))
                ).fetchone()[0]["data"][0]  # type: ignore[index]
        except psycopg.Error as error:
            return ("error", error.sqlstate)


def test_stable_default_and_policy_per_user_in_one_pooled_session(
    conn: psycopg.Connection[Any],
) -> None:
    """PostgREST: one pooled session, many users. A default and a WITH CHECK
    reading the JWT (STABLE, as Supabase's auth.uid()) see each caller."""
    make_twins(
        conn,
        """
        create table {t} (id int generated always as identity primary key,
            owner text default (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
            body text);
        alter table {t} enable row level security;
        create policy ins on {t} for insert to authenticated
            with check (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
        create policy sel on {t} for select to authenticated using (true);
        grant usage on schema public to authenticated;
        grant select, insert on {t} to authenticated;
        """,
    )
    for table in ("fast", "slow"):
        got = [_as(conn, f"u{i % 3}", table, {"body": str(i)}) for i in range(12)]
        assert [g["owner"] for g in got] == [f"u{i % 3}" for i in range(12)], table
        got = [_as(conn, f"u{i % 3}", table, {"body": str(i), "owner": "u1"}) for i in range(12)]
        assert [isinstance(g, dict) for g in got] == [i % 3 == 1 for i in range(12)], table


@pytest.mark.xfail(
    strict=True,
    reason="the session keeps _insert_row_<n>'s plan: a default or policy calling a function"
    " mislabelled IMMUTABLE is folded once per session (docs/transactions.md, Limits)",
)
def test_immutable_labelled_default_per_call(conn: psycopg.Connection[Any]) -> None:
    """A default calling a function wrongly labelled IMMUTABLE (a common
    `auth_uid()` mistake): the general path plans per call and sees each
    user; a kept plan folds the first user's value into later rows."""
    conn.execute("""
        create function public.jwt_sub() returns text language sql immutable
        as $$ select current_setting('request.jwt.claims', true)::jsonb ->> 'sub' $$;
    """)
    make_twins(
        conn,
        """
        create table {t} (id int generated always as identity primary key,
            owner text default public.jwt_sub(), body text);
        grant usage on schema public to authenticated;
        grant select, insert on {t} to authenticated;
        """,
    )
    owners = {}
    for table in ("fast", "slow"):
        owners[table] = [
            _as(conn, f"u{i % 3}", table, {"body": str(i)})["owner"] for i in range(12)
        ]
    assert owners["slow"] == [f"u{i % 3}" for i in range(12)]
    assert owners["fast"] == owners["slow"]
