"""Fixtures for the security tests: an application schema with row-level
security, and PostgREST-like sessions for two users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from .sessions import Session

# notes: every signed-in user may write, RLS keeps each to their own rows.
# secrets: no grant at all to clients. Both are managed by pgresilience.
APP_SCHEMA = """
create table public.notes (
    id bigint generated always as identity primary key,
    owner text not null default (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
    body text not null
);
alter table public.notes enable row level security;
create policy notes_own_rows on public.notes to authenticated
    using (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
    with check (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
grant select, insert, update, delete on public.notes to authenticated;

create table public.secrets (id integer primary key, value text not null);
insert into public.secrets values (1, 'launch codes');
insert into public.notes (owner, body) values ('user-a', 'note of a'), ('user-b', 'note of b');

select resilience.manage_table('public.notes');
select resilience.manage_table('public.secrets');
"""


@pytest.fixture
def app(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The superuser connection, after creating the application tables."""
    conn.execute(APP_SCHEMA)
    return conn


@pytest.fixture
def connect_as(server: Any, database: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """connect_as(login_role) -> a new autocommit connection, closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def connect(user: str) -> psycopg.Connection[Any]:
        connection = psycopg.connect(server.dsn(database, user=user), autocommit=True)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()


@pytest.fixture
def session(connect_as: Callable[[str], psycopg.Connection[Any]]) -> Callable[..., Session]:
    """session(sub, role='authenticated'): a PostgREST client with its own connection,
    logged in as `authenticator` like PostgREST."""

    def make(sub: str | None, role: str = "authenticated", **options: Any) -> Session:
        return Session(connect_as("authenticator"), role, sub, **options)

    return make


@pytest.fixture
def user_a(session: Callable[..., Session]) -> Session:
    return session("user-a")


@pytest.fixture
def user_b(session: Callable[..., Session]) -> Session:
    return session("user-b")


@contextmanager
def raises_sqlstate(*sqlstates: str) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
    """Expect a database error with one of these SQLSTATEs."""
    with pytest.raises(psycopg.Error) as info:
        yield info
    assert info.value.sqlstate in sqlstates, (info.value.sqlstate, str(info.value))


def table_rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """Every row of an application table, read as superuser, in key order."""
    return conn.execute(f"select * from {table} order by 1").fetchall()
