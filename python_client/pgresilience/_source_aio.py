"""Where a manager's connections come from: the one rule for the conninfo,
the connection or the pool a user passes (async source; ``_source.py`` is
generated from it by ``scripts/generate.py``).

* a conninfo: a pool owned here (``pool_size`` connections at most, opened on
  first use, closed by ``close()``): safe to share between tasks/threads;
* a psycopg connection: callers take turns on it, one database transaction at
  a time (a lock per connection, shared by everyone given it);
* a psycopg_pool pool: each use borrows a connection from it.

Connections opened here never prepare statements server-side
(``prepare_threshold=None``), and callers pass ``prepare=False`` on the
others, so every source works through a pooler in transaction mode.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgresilience._acompat import ALock
from pgresilience.errors import DatabaseError, PgResilienceError, conninfo_problem

__all__ = ["AsyncConnectionSource", "AsyncSource", "through_proxy"]

AsyncSource = str | psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any]

#: keyword arguments of every connection this package opens itself. UTF8
#: whatever the conninfo says: psycopg sends jsonb parameters and reads jsonb
#: results as UTF-8, which another client_encoding would turn into other
#: characters on their way.
CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "prepare_threshold": None,
    "client_encoding": "UTF8",
}

_CONNECTION_LOCKS: WeakKeyDictionary[psycopg.AsyncConnection[Any], ALock] = WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _turns(conn: psycopg.AsyncConnection[Any]) -> ALock:
    with _LOCKS_GUARD:
        lock = _CONNECTION_LOCKS.get(conn)
        if lock is None:
            lock = _CONNECTION_LOCKS[conn] = ALock()
        return lock


#: every source of this process, for the fork hook below
_SOURCES: WeakSet[AsyncConnectionSource] = WeakSet()


def _forget_parents_pools() -> None:
    """In a forked child (a web server's worker): a pool opened before the
    fork holds the parent's sessions, their sockets shared with it. Used here,
    both processes would talk on one session and read each other's replies;
    closed here, the parent's sessions would end. So the child forgets it
    (psycopg never closes a connection it garbage-collects after a fork) and
    opens its own on first use. Locks held by the parent's threads at the
    fork would never be released here: they are made anew."""
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    for source in list(_SOURCES):
        source.forget_parents_pool()


os.register_at_fork(after_in_child=_forget_parents_pools)


def through_proxy(client_port: int | None, server_port: int | None) -> bool:
    """Whether something sits between us and the server (a pooler such as
    PgBouncer or Supavisor): the port we connected to is not the server's.
    LISTEN cannot be trusted there: in transaction mode the session that
    listens is gone after the statement. (A port-forward looks the same; it
    then costs polling, never a lost change.)"""
    return client_port is not None and server_port is not None and client_port != server_port


class AsyncConnectionSource:
    """Connections from a conninfo, a connection or a pool. No I/O here."""

    def __init__(self, source: AsyncSource, *, pool_size: int = 10, name: str = "pgresilience"):
        if not isinstance(source, str | psycopg.AsyncConnection | AsyncConnectionPool):
            raise TypeError(
                f"expected a conninfo, a psycopg connection or a pool, not {type(source).__name__}"
            )
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.source = source
        self._pool_size = pool_size
        self._name = name
        self._pool: AsyncConnectionPool[Any] | None = None
        self._pool_lock = ALock()
        self._closed = False
        _SOURCES.add(self)

    def forget_parents_pool(self) -> None:
        """After a fork, in the child: see ``_forget_parents_pools``."""
        self._pool = None
        self._pool_lock = ALock()

    async def _own_pool(self, conninfo: str) -> AsyncConnectionPool[Any]:
        async with self._pool_lock:
            if self._closed:
                raise PgResilienceError("closed: this manager's connections are closed")
            if self._pool is None:
                # Parsed first: libpq's parse error would quote the conninfo,
                # password and all, into the message an app logs.
                problem = conninfo_problem(conninfo)
                if problem is not None:
                    raise DatabaseError(problem)
                # One plain connection first: a wrong conninfo fails now with
                # the server's own error, not with a pool timeout 30 s later.
                probe = await psycopg.AsyncConnection.connect(conninfo, **CONNECT_KWARGS)
                await probe.close()
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    conninfo,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs=CONNECT_KWARGS,
                    name=self._name,
                    open=False,
                )
                await pool.open()
                self._pool = pool
            return self._pool

    @property
    def others_to_try(self) -> int:
        """How many other connections a use may try after finding one closed
        by the server: every one of the pool (a restart closes them all);
        none for a single connection."""
        source = self.source
        if isinstance(source, psycopg.AsyncConnection):
            return 0
        return source.max_size if isinstance(source, AsyncConnectionPool) else self._pool_size

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one database transaction, exclusively ours meanwhile."""
        source = self.source
        if isinstance(source, psycopg.AsyncConnection):
            async with _turns(source):
                yield source
            return
        pool = source if isinstance(source, AsyncConnectionPool) else await self._own_pool(source)
        async with pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        """Close the pool opened here (if any); what the caller gave stays open."""
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
