"""Values arrive exactly whatever the client_encoding of the connection a
conninfo asks for (``client_encoding=LATIN1`` in a DSN, or PGCLIENTENCODING),
and a connection the app passes with such an encoding never stores other
characters than the app sent: exactly, or an error and nothing stored."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, PgResilienceError, TransactionManager

from .conftest import open_database_transactions

NAMES = ["café", "Ærøskøbing", "名前", "€ 100", "emoji 🎉", "ascii"]


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("create table people (id int primary key, name text not null, doc jsonb)")
    conn.execute("select resilience.manage_table('people')")
    return conn


def _stored(conn: psycopg.Connection[Any]) -> list[tuple[int, str, Any]]:
    return [tuple(r) for r in conn.execute("select id, name, doc from people order by id")]


@pytest.mark.parametrize("encoding", ["LATIN1", "WIN1252", "SQL_ASCII"])
def test_a_conninfo_asking_for_another_client_encoding_stores_exactly(
    dsn: str, people: psycopg.Connection[Any], encoding: str
) -> None:
    with TransactionManager(f"{dsn} client_encoding={encoding}") as tm:
        with tm.transaction() as tx:
            for i, name in enumerate(NAMES):
                [row] = tx.insert("people", {"id": i, "name": name, "doc": {"name": name}})
                assert row == {"id": i, "name": name, "doc": {"name": name}}
        batch = tm.run(
            [{"table": "people", "operation": "insert", "data": {"id": 99, "name": "ñ"}}]
        )
        assert batch.success, batch.error
    expected = [(i, n, {"name": n}) for i, n in enumerate(NAMES)] + [(99, "ñ", None)]
    assert _stored(people) == expected


def test_an_async_conninfo_asking_for_latin1_stores_exactly(
    dsn: str, people: psycopg.Connection[Any]
) -> None:
    async def app() -> None:
        async with AsyncTransactionManager(f"{dsn} client_encoding=LATIN1") as tm:
            async with tm.transaction() as tx:
                for i, name in enumerate(NAMES):
                    await tx.insert("people", {"id": i, "name": name})

    asyncio.run(asyncio.wait_for(app(), 60))
    assert _stored(people) == [(i, n, None) for i, n in enumerate(NAMES)]


def test_the_apps_own_latin1_connection_never_stores_other_characters(
    dsn: str, people: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(f"{dsn} client_encoding=LATIN1", autocommit=True) as own:
        tm = TransactionManager(own)
        for i, name in enumerate(NAMES):
            try:
                with tm.transaction() as tx:
                    tx.insert("people", {"id": i, "name": name})
            except (PgResilienceError, UnicodeError):
                pass  # refused (loudly) is allowed; changed is not
    for i, name, _ in _stored(people):
        assert name == NAMES[i]
    assert open_database_transactions(people) == []
