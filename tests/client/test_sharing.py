"""One manager shared by many threads (sync) or asyncio tasks: every logical
transaction ends as its worker chose (committed or rolled back), none is left
active, and the rows say so. For each source a user may pass: a conninfo (the
manager's own pool), a connection (calls take turns) and a pool."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience import AsyncTransactionManager, DatabaseError, TransactionManager

THREADS = 8
TASKS = 50


class Rollback(Exception):
    """Raised inside ``transaction()`` by the workers that choose to roll back."""


def _balances(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("select id, balance from accounts").fetchall())


def _check(conn: psycopg.Connection[Any], outcomes: dict[int, tuple[str, str]]) -> None:
    """Each worker i wrote row i: committed rows hold 100 + i, rolled back
    rows 100 again; every transaction has its chosen final status."""
    balances = _balances(conn)
    statuses = dict(conn.execute("select id::text, status from resilience.transactions").fetchall())
    for i, (tx_id, chosen) in outcomes.items():
        assert statuses[tx_id] == chosen, (i, tx_id)
        assert balances[i] == (100 + i if chosen == "committed" else 100), i
    active = conn.execute(
        "select count(*) from resilience.transactions where status = 'active'"
    ).fetchone()
    assert active == (0,)
    assert conn.execute("select count(*) from resilience._claims()").fetchone() == (0,)


def _sync_worker(tm: TransactionManager, i: int) -> tuple[str, str]:
    commit = i % 2 == 0
    tx_id = ""
    try:
        with tm.transaction(timeout=60.0, label=f"worker {i}") as tx:
            tx_id = tx.id
            for step in range(3):
                tx.update("accounts", {"balance": 100 + i - 2 + step}, match={"id": i})
            assert tx.status()["status"] == "active"
            if not commit:
                raise Rollback
    except Rollback:
        pass
    return tx_id, "committed" if commit else "rolled_back"


@pytest.mark.parametrize("kind", ["conninfo", "connection", "pool"])
def test_threads_share_one_manager(accounts, dsn, kind):
    with (
        psycopg.connect(dsn, autocommit=True) as own_conn,
        ConnectionPool(dsn, min_size=1, max_size=3, open=True) as pool,
    ):
        source: Any = {"conninfo": dsn, "connection": own_conn, "pool": pool}[kind]
        with TransactionManager(source, pool_size=3) as tm:
            with ThreadPoolExecutor(THREADS) as executor:
                rounds = [executor.submit(_sync_worker, tm, i) for i in range(1, 4 * THREADS + 1)]
                outcomes = {i + 1: f.result() for i, f in enumerate(rounds)}
            assert tm.active_transactions() == []
    _check(accounts, outcomes)


async def _async_worker(tm: AsyncTransactionManager, i: int) -> tuple[str, str]:
    commit = i % 3 != 0
    tx_id = ""
    try:
        async with tm.transaction(timeout=60.0, label=f"task {i}") as tx:
            tx_id = tx.id
            for step in range(3):
                await tx.update("accounts", {"balance": 100 + i - 2 + step}, match={"id": i})
            await asyncio.sleep(0)
            if not commit:
                raise Rollback
    except Rollback:
        pass
    return tx_id, "committed" if commit else "rolled_back"


@pytest.mark.parametrize("kind", ["conninfo", "connection", "pool"])
def test_tasks_share_one_async_manager(accounts, dsn, kind):
    async def main() -> dict[int, tuple[str, str]]:
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as own_conn,
            AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool,
        ):
            source: Any = {"conninfo": dsn, "connection": own_conn, "pool": pool}[kind]
            async with AsyncTransactionManager(source, pool_size=4) as tm:
                results = await asyncio.gather(*(_async_worker(tm, i) for i in range(1, TASKS + 1)))
                assert await tm.active_transactions() == []
        return {i + 1: r for i, r in enumerate(results)}

    outcomes = asyncio.run(main())
    _check(accounts, outcomes)


def test_a_closed_manager_refuses_calls_and_leaves_given_sources_open(accounts, dsn):
    with psycopg.connect(dsn, autocommit=True) as own_conn:
        tm = TransactionManager(own_conn)
        tm.close()
        assert not own_conn.closed
    tm = TransactionManager(dsn)
    tm.begin()
    tm.close()
    with pytest.raises(Exception, match="closed"):
        tm.begin()


def test_constructors_do_no_io_and_check_their_arguments():
    TransactionManager("host=/nonexistent dbname=nothing")  # no connection attempted
    with pytest.raises(ValueError):
        TransactionManager("dbname=x", pool_size=0)
    with pytest.raises(TypeError):
        TransactionManager(42)  # type: ignore[arg-type]


def test_a_wrong_conninfo_fails_at_once_with_the_servers_error():
    """Not with a pool timeout 30 s later: the first use connects once first."""
    tm = TransactionManager("host=127.0.0.1 port=9 connect_timeout=5")
    with pytest.raises(DatabaseError) as raised:
        tm.begin()
    assert type(raised.value.__cause__) is psycopg.OperationalError  # not PoolTimeout
    tm.close()
