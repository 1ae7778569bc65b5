"""Through a real PgBouncer in transaction mode (like Supabase's pooler on
port 6543): every client API works whatever the user passes (a conninfo, their
own psycopg connection with automatic prepares on, a pool), because our calls
never prepare statements server-side; the schema manager and the shared
circuit store see that LISTEN cannot work there and poll (the schema manager
may listen on a direct conninfo instead)."""

from __future__ import annotations

import asyncio
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience import AsyncTransactionManager, SchemaVersionManager, TransactionManager
from pgresilience.breakers import CircuitBreaker
from pgresilience.breakers.shared import SharedCircuitStore
from pgresilience.breakers.state import CircuitState
from pgresilience.installer import install
from pgresilience.status import status_lines
from pgresilience.transactions.janitor import Janitor

from .test_sharing import _async_worker, _check, _sync_worker

CALLS = 40  # psycopg prepares a statement from its 5th run on


@pytest.mark.parametrize("kind", ["conninfo", "connection", "pool"])
def test_transactions_through_the_pooler(accounts, dsn, bouncer, kind):
    pooled = bouncer.dsn(dsn)
    with (
        psycopg.connect(pooled, autocommit=True) as own,
        ConnectionPool(pooled, min_size=1, max_size=3, open=True) as pool,
    ):
        assert own.prepare_threshold == 5  # the user's connection, as psycopg makes it
        source: Any = {"conninfo": pooled, "connection": own, "pool": pool}[kind]
        with TransactionManager(source, pool_size=3) as tm:
            for _ in range(CALLS // 4):
                tx = tm.begin()
                tm.execute(tx, "accounts", "update", {"balance": 1}, match={"id": 60}).unwrap()
                tm.status(tx)
                tm.rollback(tx)
            with ThreadPoolExecutor(4) as executor:
                outcomes = dict(
                    zip(
                        range(1, 13),
                        executor.map(lambda i: _sync_worker(tm, i), range(1, 13)),
                        strict=True,
                    )
                )
            assert tm.run(
                [
                    {
                        "table": "accounts",
                        "operation": "update",
                        "data": {"balance": 7},
                        "match": {"id": 59},
                    }
                ]
            ).success
            assert tm.active_transactions() == []
            assert tm.reap() == 0
    _check(accounts, outcomes)


@pytest.mark.parametrize("kind", ["conninfo", "connection", "pool"])
def test_async_transactions_through_the_pooler(accounts, dsn, bouncer, kind):
    pooled = bouncer.dsn(dsn)

    async def main() -> dict[int, tuple[str, str]]:
        async with (
            await psycopg.AsyncConnection.connect(pooled, autocommit=True) as own,
            AsyncConnectionPool(pooled, min_size=1, max_size=3, open=False) as pool,
        ):
            source: Any = {"conninfo": pooled, "connection": own, "pool": pool}[kind]
            async with AsyncTransactionManager(source, pool_size=3) as tm:
                results = await asyncio.gather(*(_async_worker(tm, i) for i in range(1, 21)))
                assert await tm.active_transactions() == []
        return {i + 1: r for i, r in enumerate(results)}

    _check(accounts, asyncio.run(main()))


def test_janitor_install_and_status_through_the_pooler(bare_dsn, bouncer):
    pooled = bouncer.dsn(bare_dsn)
    install(pooled)
    install(pooled)  # again: the upgrade path, through the pooler
    with psycopg.connect(pooled, autocommit=True) as conn:
        for _ in range(3):
            assert any(line.startswith("installed: revision") for line in status_lines(conn))
    with Janitor(pooled, interval=60) as janitor:
        for _ in range(CALLS // 4):
            janitor.reap_once()


def test_schema_manager_polls_behind_the_pooler(conn, dsn, bouncer):
    received: queue.Queue[Any] = queue.Queue()
    with SchemaVersionManager(bouncer.dsn(dsn), poll_interval=0.2) as manager:
        start = manager.initialize()
        manager.on_schema_change(received.put)
        assert manager.wait_listening()
        assert manager.mode == "poll"
        for name in ("gizmos", "gadgets"):
            conn.execute(f"create table {name} (id int primary key)")
            changes = received.get(timeout=10)
            assert [c["type"] for c in changes] == ["table_added"]
        assert changes.version == start.version + 2
        assert manager.get_current_version().version == changes.version


def test_schema_manager_listens_on_a_direct_conninfo(conn, dsn, bouncer):
    received: queue.Queue[Any] = queue.Queue()
    with SchemaVersionManager(bouncer.dsn(dsn), listen_conninfo=dsn) as manager:
        manager.initialize()
        manager.on_schema_change(received.put)
        assert manager.wait_listening()
        assert manager.mode == "listen" and manager.connections == 1
        conn.execute("create table widgets (id int primary key)")
        assert [c["type"] for c in received.get(timeout=10)] == ["table_added"]


def test_shared_breaker_store_polls_behind_the_pooler(dsn, bouncer):
    """The shared circuit store sees that LISTEN cannot work through the
    pooler and relies on its refresh: a circuit opened by another process
    (here: a store on a direct connection) reaches the pooled process within
    a few refresh intervals, and many round trips leave no prepared
    statement behind (psycopg prepares from the 5th run of a statement)."""
    direct = SharedCircuitStore(dsn, refresh_interval=0.1)
    pooled = SharedCircuitStore(bouncer.dsn(dsn), refresh_interval=0.1)
    with direct, pooled:
        opener = direct.attach(CircuitBreaker("ai-pooled", failure_threshold=1, timeout=60.0))
        follower = pooled.attach(CircuitBreaker("ai-pooled", failure_threshold=1, timeout=60.0))
        assert direct.wait_connected(10) and pooled.wait_connected(10)
        assert (direct.mode, pooled.mode) == ("listen", "poll")
        time.sleep(1.0)  # ~10 refreshes through the pooler: no "_pg3_0 already exists"
        opener.open(30)
        assert direct.flush(10)
        deadline = time.monotonic() + 10
        while follower.state != CircuitState.OPEN and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follower.state == CircuitState.OPEN
        assert pooled.available
