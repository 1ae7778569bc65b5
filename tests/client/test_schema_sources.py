"""SchemaVersionManager takes a conninfo, a connection or a pool, like the
transaction managers; a single connection (or ``poll=True``) means polling."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience import AsyncSchemaVersionManager, SchemaVersionManager


@pytest.mark.parametrize("kind", ["conninfo", "connection", "pool", "poll"])
def test_every_source_delivers_a_committed_migration(conn, dsn, kind):
    received: queue.Queue[Any] = queue.Queue()
    with (
        psycopg.connect(dsn, autocommit=True) as own,
        ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool,
    ):
        source: Any = {"conninfo": dsn, "connection": own, "pool": pool, "poll": dsn}[kind]
        with SchemaVersionManager(source, poll=kind == "poll", poll_interval=0.1) as manager:
            assert manager.mode == ("poll" if kind in ("connection", "poll") else "listen")
            start = manager.initialize()
            manager.on_schema_change(received.put)
            assert manager.wait_listening()
            conn.execute("create table gadgets (id int primary key)")
            changes = received.get(timeout=10)
            assert changes.version == start.version + 1
            assert [c["type"] for c in changes] == ["table_added"]
            assert manager.get_current_version().version == changes.version
            assert [v["version"] for v in manager.history(1)] == [changes.version]


@pytest.mark.parametrize("kind", ["connection", "pool"])
def test_async_sources_deliver_too(conn, dsn, kind):
    async def main() -> list[str]:
        got: asyncio.Queue[Any] = asyncio.Queue()
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as own,
            AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool,
        ):
            source: Any = own if kind == "connection" else pool
            async with AsyncSchemaVersionManager(source, poll_interval=0.1) as manager:
                await manager.on_schema_change(got.put)
                assert await manager.wait_listening()
                await asyncio.to_thread(conn.execute, "create table widgets (id int primary key)")
                changes = await asyncio.wait_for(got.get(), 10)
                return [c["type"] for c in changes]

    assert asyncio.run(main()) == ["table_added"]
