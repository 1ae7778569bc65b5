"""TransactionManager and AsyncTransactionManager: thin I/O over ``core``.

Each method builds its ``core.Call`` and runs it as its own database
transaction (as an RPC is). A manager accepts a conninfo string (one
connection opened lazily, on first use), a psycopg connection, or a
psycopg_pool pool. Constructors do no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience.errors import PgResilienceError
from pgresilience.queries import query
from pgresilience.transactions import batch, core
from pgresilience.transactions.core import Call, ExecuteResult, TxId

__all__ = [
    "AsyncTransaction",
    "AsyncTransactionManager",
    "Transaction",
    "TransactionManager",
]

T = TypeVar("T")
SyncSource = str | psycopg.Connection[Any] | ConnectionPool[Any]
AsyncSource = str | psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any]


class TransactionManager:
    """Logical transactions over a conninfo, a Connection or a ConnectionPool."""

    def __init__(self, source: SyncSource) -> None:
        self._source = source
        self._own: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    # -- I/O ---------------------------------------------------------------
    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        if isinstance(self._source, ConnectionPool):
            return self._source.connection()
        if isinstance(self._source, psycopg.Connection):
            return nullcontext(self._source)
        with self._lock:
            if self._own is None or self._own.closed:
                self._own = psycopg.connect(self._source, autocommit=True)
            return nullcontext(self._own)

    def _run(self, call: Call[T]) -> T:
        with self._connection() as conn:
            try:
                with conn.transaction():
                    rows = conn.execute(query(call.query), call.params).fetchall()
            except psycopg.Error as exc:
                return call.on_error(exc)
        return call.parse(rows)

    def close(self) -> None:
        """Close the connection this manager opened itself (if any)."""
        if self._own is not None:
            self._own.close()
            self._own = None

    def __enter__(self) -> TransactionManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- API ---------------------------------------------------------------
    def begin(self, timeout: float | None = 30.0, label: str | None = None) -> str:
        return self._run(core.begin(timeout, label))

    def execute(
        self,
        tx_id: TxId,
        table: str,
        operation: str,
        data: Any = None,
        match: Mapping[str, Any] | None = None,
    ) -> ExecuteResult:
        return self._run(core.execute(tx_id, table, operation, data, match))

    def savepoint(self, tx_id: TxId, name: str) -> dict[str, Any]:
        return self._run(core.savepoint(tx_id, name))

    def rollback_to(self, tx_id: TxId, name: str) -> dict[str, Any]:
        return self._run(core.rollback_to(tx_id, name))

    def commit(self, tx_id: TxId) -> dict[str, Any]:
        return self._run(core.commit(tx_id))

    def rollback(
        self, tx_id: TxId, reason: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        return self._run(core.rollback(tx_id, reason, force))

    def status(self, tx_id: TxId) -> dict[str, Any]:
        return self._run(core.status(tx_id))

    def active_transactions(self) -> list[dict[str, Any]]:
        return self._run(core.active())

    def reap(self, max_count: int = 100) -> int:
        return self._run(core.reap(max_count))

    def run(self, operations: Iterable[Mapping[str, Any]]) -> batch.BatchResult:
        """tx_run: an atomic batch in one database transaction (see batch.py)."""
        return self._run(batch.run(operations))

    @contextmanager
    def transaction(
        self, timeout: float | None = 30.0, label: str | None = None
    ) -> Iterator[Transaction]:
        """Commit on exit, roll back on exception (then re-raise it)."""
        tx = Transaction(self, self.begin(timeout, label))
        try:
            yield tx
        except BaseException as exc:
            try:
                self.rollback(tx.id, reason=_reason(exc))
            except PgResilienceError as rollback_error:
                exc.add_note(f"pgresilience: rollback of {tx.id} failed too: {rollback_error}")
            raise
        self.commit(tx.id)


class Transaction:
    """The handle ``TransactionManager.transaction()`` yields: writes raise on error."""

    def __init__(self, manager: TransactionManager, tx_id: str) -> None:
        self.manager = manager
        self.id = tx_id

    def execute(
        self, table: str, operation: str, data: Any = None, match: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return self.manager.execute(self.id, table, operation, data, match).unwrap()

    def insert(self, table: str, data: Any) -> list[dict[str, Any]]:
        return self.execute(table, "insert", data)

    def update(
        self, table: str, data: Mapping[str, Any], match: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return self.execute(table, "update", data, match)

    def delete(self, table: str, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.execute(table, "delete", None, match)

    def upsert(self, table: str, data: Any) -> list[dict[str, Any]]:
        return self.execute(table, "upsert", data)

    def savepoint(self, name: str) -> dict[str, Any]:
        return self.manager.savepoint(self.id, name)

    def rollback_to(self, name: str) -> dict[str, Any]:
        return self.manager.rollback_to(self.id, name)

    def status(self) -> dict[str, Any]:
        return self.manager.status(self.id)


class AsyncTransactionManager:
    """``TransactionManager`` for asyncio: AsyncConnection or AsyncConnectionPool."""

    def __init__(self, source: AsyncSource) -> None:
        self._source = source
        self._own: psycopg.AsyncConnection[Any] | None = None

    # -- I/O ---------------------------------------------------------------
    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if isinstance(self._source, AsyncConnectionPool):
            async with self._source.connection() as conn:
                yield conn
            return
        if isinstance(self._source, psycopg.AsyncConnection):
            yield self._source
            return
        if self._own is None or self._own.closed:
            self._own = await psycopg.AsyncConnection.connect(self._source, autocommit=True)
        yield self._own

    async def _run(self, call: Call[T]) -> T:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    cursor = await conn.execute(query(call.query), call.params)
                    rows = await cursor.fetchall()
            except psycopg.Error as exc:
                return call.on_error(exc)
        return call.parse(rows)

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()
            self._own = None

    async def __aenter__(self) -> AsyncTransactionManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- API ---------------------------------------------------------------
    async def begin(self, timeout: float | None = 30.0, label: str | None = None) -> str:
        return await self._run(core.begin(timeout, label))

    async def execute(
        self,
        tx_id: TxId,
        table: str,
        operation: str,
        data: Any = None,
        match: Mapping[str, Any] | None = None,
    ) -> ExecuteResult:
        return await self._run(core.execute(tx_id, table, operation, data, match))

    async def savepoint(self, tx_id: TxId, name: str) -> dict[str, Any]:
        return await self._run(core.savepoint(tx_id, name))

    async def rollback_to(self, tx_id: TxId, name: str) -> dict[str, Any]:
        return await self._run(core.rollback_to(tx_id, name))

    async def commit(self, tx_id: TxId) -> dict[str, Any]:
        return await self._run(core.commit(tx_id))

    async def rollback(
        self, tx_id: TxId, reason: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        return await self._run(core.rollback(tx_id, reason, force))

    async def status(self, tx_id: TxId) -> dict[str, Any]:
        return await self._run(core.status(tx_id))

    async def active_transactions(self) -> list[dict[str, Any]]:
        return await self._run(core.active())

    async def reap(self, max_count: int = 100) -> int:
        return await self._run(core.reap(max_count))

    async def run(self, operations: Iterable[Mapping[str, Any]]) -> batch.BatchResult:
        """tx_run: an atomic batch in one database transaction (see batch.py)."""
        return await self._run(batch.run(operations))

    def transaction(
        self, timeout: float | None = 30.0, label: str | None = None
    ) -> AbstractAsyncContextManager[AsyncTransaction]:
        """``async with``: commit on exit, roll back on exception."""
        return self._transaction(timeout, label)

    @asynccontextmanager
    async def _transaction(
        self, timeout: float | None, label: str | None
    ) -> AsyncIterator[AsyncTransaction]:
        tx = AsyncTransaction(self, await self.begin(timeout, label))
        try:
            yield tx
        except BaseException as exc:
            try:
                await self.rollback(tx.id, reason=_reason(exc))
            except PgResilienceError as rollback_error:
                exc.add_note(f"pgresilience: rollback of {tx.id} failed too: {rollback_error}")
            raise
        await self.commit(tx.id)


class AsyncTransaction:
    """The handle ``AsyncTransactionManager.transaction()`` yields."""

    def __init__(self, manager: AsyncTransactionManager, tx_id: str) -> None:
        self.manager = manager
        self.id = tx_id

    async def execute(
        self, table: str, operation: str, data: Any = None, match: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return (await self.manager.execute(self.id, table, operation, data, match)).unwrap()

    async def insert(self, table: str, data: Any) -> list[dict[str, Any]]:
        return await self.execute(table, "insert", data)

    async def update(
        self, table: str, data: Mapping[str, Any], match: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return await self.execute(table, "update", data, match)

    async def delete(self, table: str, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        return await self.execute(table, "delete", None, match)

    async def upsert(self, table: str, data: Any) -> list[dict[str, Any]]:
        return await self.execute(table, "upsert", data)

    async def savepoint(self, name: str) -> dict[str, Any]:
        return await self.manager.savepoint(self.id, name)

    async def rollback_to(self, name: str) -> dict[str, Any]:
        return await self.manager.rollback_to(self.id, name)

    async def status(self) -> dict[str, Any]:
        return await self.manager.status(self.id)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
