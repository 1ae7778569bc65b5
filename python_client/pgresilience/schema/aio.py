"""AsyncSchemaVersionManager: the asyncio twin of SchemaVersionManager (same
core, same behaviour; callbacks may be plain functions or coroutines)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import TracebackType
from typing import Any

import psycopg

from pgresilience.errors import map_error
from pgresilience.queries import query
from pgresilience.schema._core import (
    Callback,
    ChangeList,
    SchemaCache,
    SchemaState,
    SchemaVersion,
    rated_history,
)
from pgresilience.schema.manager import LISTENER_NAME

__all__ = ["AsyncSchemaVersionManager"]

log = logging.getLogger("pgresilience.schema")


class AsyncSchemaVersionManager:
    """Watch the schema of one database from asyncio. No I/O until ``initialize()``."""

    def __init__(
        self,
        conninfo: str,
        *,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        self._conninfo = conninfo
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._poll_interval = poll_interval
        self._state = SchemaState()
        self._task: asyncio.Task[None] | None = None
        self._initialized = False
        self.listening = asyncio.Event()
        self.connections = 0

    @property
    def cache(self) -> SchemaCache:
        return self._state.cache

    @property
    def last_version(self) -> int | None:
        return self._state.last_version

    async def initialize(self) -> SchemaVersion:
        current = await self._fetch_current()
        self._state.seen(current.version)
        self._state.current = current
        self._initialized = True
        return current

    async def on_schema_change(self, callback: Callback) -> None:
        if not self._initialized:
            await self.initialize()
        self._state.add_callback(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="pgresilience-schema-listener")

    async def wait_listening(self, timeout: float = 10.0) -> bool:
        try:
            await asyncio.wait_for(self.listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def force_refresh(self) -> SchemaVersion:
        await self._one("schema_refresh")
        await self.catch_up()
        self._state.current = None
        return await self.get_current_version()

    async def get_current_version(self) -> SchemaVersion:
        current = self._state.current
        if current is not None and self.listening.is_set():
            return current
        current = await self._fetch_current()
        self._state.current = current
        return current

    async def history(self, max_count: int = 50) -> list[dict[str, Any]]:
        rows = await self._rows("schema_history_rated", {"n": max_count})
        return rated_history([row[0] for row in rows])

    async def changes_since(self, version: int) -> list[ChangeList]:
        rows = await self._rows("schema_changes_since", (version,))
        return [ChangeList.from_row(row[0]) for row in rows]

    async def catch_up(self) -> list[ChangeList]:
        try:
            async with await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            ) as conn:
                return await self._deliver(conn)
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.listening.clear()

    async def __aenter__(self) -> AsyncSchemaVersionManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _rows(self, name: str, params: Any = ()) -> list[tuple[Any, ...]]:
        try:
            async with await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            ) as conn:
                cursor = await conn.execute(query(name), params)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    async def _one(self, name: str) -> Any:
        rows = await self._rows(name)
        return rows[0][0] if rows else None

    async def _fetch_current(self) -> SchemaVersion:
        return SchemaVersion.from_json(await self._one("schema_current") or {})

    async def _deliver(self, conn: psycopg.AsyncConnection[Any]) -> list[ChangeList]:
        cursor = await conn.execute(query("schema_changes_since"), (self._state.since(),))
        fresh = self._state.accept([row[0] for row in await cursor.fetchall()])
        for changes in fresh:
            for callback in list(self._state.callbacks):
                try:
                    result = callback(changes)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("schema change callback failed for version %s", changes.version)
        return fresh

    async def _listen(self) -> None:
        delay = self._reconnect_delay
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=LISTENER_NAME
                ) as conn:
                    await conn.execute(query("schema_listen"))
                    self.connections += 1
                    await self._deliver(conn)
                    self.listening.set()
                    delay = self._reconnect_delay
                    while True:
                        notified = False
                        async for _ in conn.notifies(timeout=self._poll_interval, stop_after=1):
                            notified = True
                        if notified:
                            await self._deliver(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("schema listener disconnected (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)
