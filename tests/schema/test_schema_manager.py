"""SchemaVersionManager and its async twin against a real PostgreSQL: LISTEN
callbacks, reconnect with catch-up, force_refresh, the self-clearing cache,
and client-side diffs where the database has no PL/Python."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import psycopg

from pgresilience.schema import AsyncSchemaVersionManager, ChangeList, SchemaVersionManager
from pgresilience.schema.manager import LISTENER_NAME
from pgresilience.schema.status import status_lines

from .conftest import watch_lines

USERS = "create table users (id bigint primary key, email text)"


def next_version(received: queue.Queue[ChangeList], timeout: float = 10.0) -> ChangeList:
    return received.get(timeout=timeout)


def test_callback_gets_each_committed_migration(dsn: str, conn: psycopg.Connection[Any]) -> None:
    received: queue.Queue[ChangeList] = queue.Queue()
    with SchemaVersionManager(dsn) as manager:
        start = manager.initialize()
        manager.on_schema_change(received.put)
        assert manager.wait_listening()
        with conn.transaction():
            conn.execute(USERS)
            conn.execute("create index on users (email)")
        changes = next_version(received)
        assert changes.version == start.version + 1
        assert [(c["type"], c["table"], c["severity"]) for c in changes] == [
            ("table_added", "public.users", "low")
        ]
        assert changes.max_severity == "low"
        conn.execute("alter table users drop column email")
        dropped = next_version(received)
        assert dropped.version == start.version + 2
        # The index on the column went with it: reported too.
        assert [(c["type"], c["column"], c["severity"]) for c in dropped] == [
            ("column_dropped", "email", "critical"),
            ("index_dropped", None, "medium"),
        ]
        current = manager.get_current_version()
        assert current.version == dropped.version
        assert current.hash == dropped.hash
        assert [c["name"] for c in current.tables["public.users"]["columns"]] == ["id"]


def test_reconnect_catches_up_on_versions_missed_while_disconnected(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    received: queue.Queue[ChangeList] = queue.Queue()
    with SchemaVersionManager(dsn, reconnect_delay=0.5) as manager:
        start = manager.initialize()
        manager.on_schema_change(received.put)
        assert manager.wait_listening()
        # Kill the listener's connection, then migrate twice before it is back.
        killed = conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where application_name = %s and datname = current_database()",
            (LISTENER_NAME,),
        ).fetchone()
        assert killed == (1,)
        conn.execute(USERS)
        conn.execute("alter table users add column name text")
        versions = [next_version(received), next_version(received)]
        assert [v.version for v in versions] == [start.version + 1, start.version + 2]
        assert [v[0]["type"] for v in versions] == ["table_added", "column_added"]
        assert manager.connections >= 2
        assert received.empty()  # each version exactly once


def test_force_refresh_and_client_side_diff_without_plpython(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Without event triggers or PL/Python (hosted Supabase without the
    privilege), schema_refresh() records the drift and the client diffs it."""
    conn.execute("drop function if exists resilience._schema_diff(json)")
    conn.execute("update resilience.settings set value = 'off' where name = 'schema_tracking'")
    received: list[ChangeList] = []
    with SchemaVersionManager(dsn) as manager:
        start = manager.initialize()
        manager.on_schema_change(received.append)
        conn.execute(USERS)
        conn.execute("alter table users rename column email to mail")
        assert manager.get_current_version().version == start.version  # not tracked yet
        current = manager.force_refresh()
        assert current.version == start.version + 1
        [changes] = [c for c in received if c.version == current.version]
        assert changes.diffed_in == "client"
        assert changes.origin == "refresh"
        assert [(c["type"], c["table"]) for c in changes] == [("table_added", "public.users")]
        [history] = manager.history(1)
        # Rated by the client: history carries a severity in every mode.
        assert history["version"] == current.version
        assert (history["change_count"], history["max_severity"]) == (1, "low")


def test_cache_clears_itself_on_a_new_version(dsn: str, conn: psycopg.Connection[Any]) -> None:
    received: queue.Queue[ChangeList] = queue.Queue()
    with SchemaVersionManager(dsn) as manager:
        manager.initialize()
        manager.on_schema_change(received.put)
        assert manager.wait_listening()
        calls = []

        def columns() -> list[str]:
            calls.append(1)
            tables = manager.get_current_version().tables
            return [c["name"] for c in tables.get("public.users", {}).get("columns", [])]

        conn.execute(USERS)
        next_version(received)
        assert manager.cache.get_or_compute("users", columns) == ["id", "email"]
        assert manager.cache.get_or_compute("users", columns) == ["id", "email"]
        assert len(calls) == 1
        conn.execute("alter table users add column name text")
        changes = next_version(received)
        assert "users" not in manager.cache and manager.cache.version == changes.version
        assert manager.cache.get_or_compute("users", columns) == ["id", "email", "name"]


def test_async_twin(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async def scenario() -> list[ChangeList]:
        received: asyncio.Queue[ChangeList] = asyncio.Queue()

        async def on_change(changes: ChangeList) -> None:
            await received.put(changes)

        async with AsyncSchemaVersionManager(dsn) as manager:
            start = await manager.initialize()
            await manager.on_schema_change(on_change)
            assert await manager.wait_listening()
            await asyncio.to_thread(conn.execute, USERS)
            first = await asyncio.wait_for(received.get(), 10)
            assert first.version == start.version + 1
            assert (await manager.get_current_version()).version == first.version
            await asyncio.to_thread(
                conn.execute, "alter table users alter column email set not null"
            )
            second = await asyncio.wait_for(received.get(), 10)
            history = await manager.history(2)
            assert [h["version"] for h in history] == [second.version, first.version]
            return [first, second]

    first, second = asyncio.run(scenario())
    assert [c["type"] for c in first] == ["table_added"]
    assert [(c["type"], c["severity"]) for c in second] == [("nullability_changed", "high")]


def test_watch_prints_versions_and_changes(dsn: str, conn: psycopg.Connection[Any]) -> None:
    text = "\n".join(watch_lines(dsn, conn, USERS))
    assert "schema version" in text and "[low] table_added public.users" in text


def test_status_lines(conn: psycopg.Connection[Any]) -> None:
    conn.execute(USERS)
    lines = status_lines(conn)
    latest = conn.execute("select max(version) from resilience.schema_versions").fetchone()
    assert latest is not None
    assert lines[0].startswith(f"current version: {latest[0]} ")
    assert any(line.startswith("tracking: on") for line in lines)
