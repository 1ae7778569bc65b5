"""AsyncSchemaVersionManager: the schema version, its history, and live change
callbacks, with automatic reconnect that catches up on every version committed
while it was disconnected.

The async code in ``aio.py`` is the source: the sync twin in ``manager.py``
(``SchemaVersionManager``, whose callbacks run on a listener thread) is
generated from it by ``scripts/generate.py``.

Queries go through ``AsyncConnectionSource`` (a conninfo, a connection or a
pool, as for the transaction managers). Changes arrive in one of two modes:

* ``listen``: ``LISTEN resilience_schema`` on a connection of its own, from
  ``listen_conninfo`` when given (a direct URL when the main one goes through a
  pooler), else the conninfo, else one held from the pool;
* ``poll``: ``schema_changes_since`` every ``poll_interval`` seconds (0.5 s by
  default), when the source is a single connection (LISTEN would need it for
  itself), when ``poll=True``, or when the listener finds itself behind a
  pooler (``through_proxy``: the port it connected to is not the server's),
  where LISTEN cannot deliver notifications; pass a direct ``listen_conninfo``
  to listen anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any
from weakref import WeakSet

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgresilience._acompat import AEvent, aevent_wait, ainvoke, aspawn, aspawn_in_child, astop
from pgresilience._source_aio import (
    CONNECT_KWARGS,
    AsyncConnectionSource,
    AsyncSource,
    through_proxy,
)
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

__all__ = ["LISTENER_NAME", "AsyncSchemaVersionManager"]

log = logging.getLogger("pgresilience.schema")

#: application_name of the listener connection (visible in pg_stat_activity)
LISTENER_NAME = "pgresilience-schema-listener"

#: every manager of this process, for the fork hook below
_MANAGERS: WeakSet[AsyncSchemaVersionManager] = WeakSet()


def _listen_again_in_child() -> None:
    """In a forked child (a web server's worker, the app loaded before the
    fork): see ``AsyncSchemaVersionManager._forked``."""
    for manager in list(_MANAGERS):
        manager._forked()


os.register_at_fork(after_in_child=_listen_again_in_child)


class AsyncSchemaVersionManager:
    """Watch the schema of one database.

    Nothing touches the database until ``initialize()`` (or the first call that
    needs it). Callbacks (plain functions, or coroutine functions in async
    code) run one version at a time, oldest first, each version once.
    """

    def __init__(
        self,
        source: AsyncSource,
        *,
        listen_conninfo: str | None = None,
        poll: bool = False,
        pool_size: int = 2,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        self._connections = AsyncConnectionSource(
            source, pool_size=pool_size, name="pgresilience-schema"
        )
        self._listen_conninfo = listen_conninfo
        #: how changes arrive: "listen" (LISTEN/NOTIFY) or "poll" (see the module)
        self.mode = (
            "poll"
            if poll or (listen_conninfo is None and isinstance(source, psycopg.AsyncConnection))
            else "listen"
        )
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._poll_interval = poll_interval
        self._state = SchemaState()
        self._stop = AEvent()
        self._worker: Any = None
        self._initialized = False
        #: set while changes are being delivered (listening, or polling)
        self.listening = AEvent()
        #: how many times the listener (re)connected
        self.connections = 0
        #: a worker to start again at the next use (forked child, async)
        self._resume = False
        _MANAGERS.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's listener (thread or task) is not
        here, and its ``listening`` flag would have the current version
        served from memory for ever, callbacks never called. The child
        forgets both and listens on a connection of its own (the pool's
        were forgotten already: ``_source_aio``): a thread starts now, a
        task at the next ``get_current_version()`` or ``on_schema_change()``."""
        self.listening = AEvent()
        self._stop = AEvent()
        self._state.forked()
        worker, self._worker = self._worker, None
        if worker is not None:
            self._worker = aspawn_in_child(self._watch, name=LISTENER_NAME)
            self._resume = self._worker is None

    def _resume_listening(self) -> None:
        if self._resume and self._worker is None and not self._stop.is_set():
            self._resume = False
            self._worker = aspawn(self._watch, name=LISTENER_NAME)

    # -- public API ------------------------------------------------------------

    @property
    def cache(self) -> SchemaCache:
        """Cache for schema-derived values; cleared when a new version arrives."""
        return self._state.cache

    @property
    def last_version(self) -> int | None:
        """The newest version this manager knows of."""
        return self._state.last_version

    async def initialize(self) -> SchemaVersion:
        """Read the current version; callbacks get the versions after it."""
        current = await self._fetch_current()
        self._state.seen(current.version)
        self._state.current = current
        self._initialized = True
        return current

    async def on_schema_change(self, callback: Callback) -> None:
        """Call ``callback(changes)`` for every new version (``changes`` is a
        list of change dicts with ``.version``, ``.hash``, ``.max_severity``)."""
        if not self._initialized:
            await self.initialize()
        self._state.add_callback(callback)
        self._resume_listening()
        if self._worker is None:
            self._stop.clear()
            self._worker = aspawn(self._watch, name=LISTENER_NAME)

    async def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait until changes are being delivered (tests, demos)."""
        return await aevent_wait(self.listening, timeout)

    async def force_refresh(self) -> SchemaVersion:
        """Full re-snapshot in the database (``schema_refresh()``); callbacks
        get any drift it recorded before this returns."""
        await self._one("schema_refresh")
        await self.catch_up()
        self._state.current = None
        return await self.get_current_version()

    async def get_current_version(self) -> SchemaVersion:
        """The current version (``.version``, ``.hash``, ``.tables``); served
        from memory while a LISTEN connection guarantees it is fresh."""
        self._resume_listening()
        current = self._state.current
        if current is not None and self.mode == "listen" and self.listening.is_set():
            return current
        current = await self._fetch_current()
        self._state.current = current
        return current

    async def history(self, max_count: int = 50) -> list[dict[str, Any]]:
        """Versions, newest first."""
        rows = await self._rows("schema_history_rated", {"n": max_count})
        return rated_history([row[0] for row in rows])

    async def changes_since(self, version: int) -> list[ChangeList]:
        """Changes of every version after ``version``, oldest first."""
        rows = await self._rows("schema_changes_since", (version,))
        return [ChangeList.from_row(row[0]) for row in rows]

    async def catch_up(self) -> list[ChangeList]:
        """Deliver versions newer than the last one seen; returns them."""
        try:
            async with self._connections.connection() as conn:
                return await self._deliver(conn)
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    async def close(self) -> None:
        """Stop delivering changes and close the connections opened here."""
        self._stop.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            await astop(worker, timeout=self._poll_interval + 5.0)
        self.listening.clear()
        await self._connections.close()

    async def __aenter__(self) -> AsyncSchemaVersionManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------

    async def _rows(self, name: str, params: Any = ()) -> list[tuple[Any, ...]]:
        try:
            async with self._connections.connection() as conn, conn.transaction():
                cursor = await conn.execute(query(name), params, prepare=False)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    async def _one(self, name: str) -> Any:
        rows = await self._rows(name)
        return rows[0][0] if rows else None

    async def _fetch_current(self) -> SchemaVersion:
        return SchemaVersion.from_json(await self._one("schema_current") or {})

    async def _deliver(self, conn: psycopg.AsyncConnection[Any]) -> list[ChangeList]:
        # In a transaction block: a connection the user gave may not be in
        # autocommit mode, and must not be left inside a transaction.
        async with conn.transaction():
            cursor = await conn.execute(
                query("schema_changes_since"), (self._state.since(),), prepare=False
            )
            rows = await cursor.fetchall()
        fresh = self._state.accept([row[0] for row in rows])
        for changes in fresh:
            for callback in list(self._state.callbacks):
                try:
                    await ainvoke(callback, changes)
                except Exception:  # a callback's bug must not stop the listener
                    log.exception("schema change callback failed for version %s", changes.version)
        return fresh

    async def _behind_pooler(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        async with conn.transaction():
            cursor = await conn.execute(query("server_port"), prepare=False)
            row = await cursor.fetchone()
        return through_proxy(conn.info.port, row[0] if row else None)

    @asynccontextmanager
    async def _listener(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of its own for LISTEN (see the module's docstring)."""
        source = self._connections.source
        conninfo = self._listen_conninfo or (source if isinstance(source, str) else None)
        if conninfo is not None:
            async with await psycopg.AsyncConnection.connect(
                conninfo, application_name=LISTENER_NAME, **CONNECT_KWARGS
            ) as conn:
                yield conn
        else:
            assert isinstance(source, AsyncConnectionPool)
            async with source.connection() as conn:
                try:
                    yield conn
                finally:
                    # The connection goes back to the pool: without our LISTEN.
                    if not conn.closed:
                        async with conn.transaction():
                            await conn.execute(query("schema_unlisten"), prepare=False)

    async def _watch(self) -> None:
        delay = self._reconnect_delay
        while not self._stop.is_set():
            try:
                if self.mode == "poll":
                    async with self._connections.connection() as conn:
                        await self._deliver(conn)
                    self.listening.set()
                    delay = self._reconnect_delay
                    await aevent_wait(self._stop, self._poll_interval)
                    continue
                async with self._listener() as conn:
                    if self._listen_conninfo is None and await self._behind_pooler(conn):
                        log.warning(
                            "schema watcher: %s:%s is a pooler or proxy, where LISTEN cannot "
                            "deliver notifications: polling every %.1fs instead (pass "
                            "listen_conninfo=<direct URL> to listen)",
                            conn.info.host,
                            conn.info.port,
                            self._poll_interval,
                        )
                        self.mode = "poll"
                        continue
                    async with conn.transaction():  # LISTEN takes effect at commit
                        await conn.execute(query("schema_listen"), prepare=False)
                    self.connections += 1
                    # Versions committed while we were not listening.
                    await self._deliver(conn)
                    self.listening.set()
                    delay = self._reconnect_delay
                    while not self._stop.is_set():
                        notified = False
                        async for _ in conn.notifies(timeout=self._poll_interval, stop_after=1):
                            notified = True
                        if notified:
                            await self._deliver(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("schema watcher disconnected (%s); retrying in %.1fs", exc, delay)
                await aevent_wait(self._stop, delay)
                delay = min(delay * 2, self._max_reconnect_delay)
        self.listening.clear()
