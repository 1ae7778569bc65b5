# Generated from aio.py by scripts/generate.py: do not edit; edit aio.py and run it.
"""TransactionManager and Transaction: thin I/O over ``core``.

The async code in ``aio.py`` is the source: the sync twin in ``manager.py``
is generated from it by ``scripts/generate.py`` (edit ``aio.py``, then run
it; ``make lint`` fails while they differ).

Each method builds its ``core.Call`` and runs it as its own database
transaction (as an RPC is), on a connection from ``ConnectionSource``: a
conninfo (the manager owns a pool of ``pool_size`` connections and may be
shared by any number of tasks, or threads for the sync manager), a psycopg
connection (calls take turns on it), or a psycopg_pool pool. Statements are
never prepared server-side, so every source works through a pooler in
transaction mode (PgBouncer, Supavisor). Constructors do no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from pgresilience._acompat import shield
from pgresilience._source import ConnectionSource, SyncSource
from pgresilience.errors import (
    InvalidOperation,
    TransactionNotActive,
    TransactionNotFound,
    map_error,
)
from pgresilience.queries import query
from pgresilience.transactions import batch, core
from pgresilience.transactions.core import Call, ExecuteResult, TxId

__all__ = ["SyncSource", "Transaction", "TransactionManager"]

T = TypeVar("T")


def _refuse_open_transaction(conn: psycopg.Connection[Any]) -> None:
    """A call must be its own database transaction. On the app's own
    connection already inside one (psycopg's default is not autocommit) it
    would run in a savepoint of the app's transaction: a commit reported as
    done would vanish with the app's rollback or close. (Pooled connections
    are always idle when lent.)"""
    status = conn.info.transaction_status
    if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        raise InvalidOperation(
            f"the connection is inside a transaction ({status.name}): each call must be its "
            "own database transaction; commit or roll back first, or pass an autocommit connection"
        )


class _DeadBeforeTheCall(Exception):
    """The connection was found closed by the server at BEGIN."""


class TransactionManager:
    """Logical transactions over a conninfo, a connection or a pool (see the
    module's docstring). ``pool_size``: most connections of the pool the
    manager opens for a conninfo."""

    def __init__(self, source: SyncSource, *, pool_size: int = 10) -> None:
        self._connections = ConnectionSource(source, pool_size=pool_size)

    # -- I/O ---------------------------------------------------------------
    def _run(self, call: Call[T]) -> T:
        others = self._connections.others_to_try
        read: list[core.Rows] = []  # the statement's rows, once it ran
        try:
            while True:
                try:
                    return self._attempt(call, may_retry=others > 0, read=read)
                except _DeadBeforeTheCall:
                    others -= 1
        except psycopg.Error as exc:  # no connection: raised, whatever the call
            raise map_error(exc) from exc
        except BaseException as exc:
            # Interrupted after the statement ran (a cancelled task, Ctrl-C,
            # the connection lost at COMMIT): the commit may have happened,
            # and its result (a new transaction's id) nobody will see.
            if read and call.undo is not None:
                self._undo_unseen(call.undo(call.parse(read[0])), exc)
            raise

    def _undo_unseen(self, undo: Call[Any], exc: BaseException) -> None:
        try:
            # shielded: a task cancelled again meanwhile must not cut it short
            shield(self._run(undo))
        except TransactionNotFound:
            pass  # the commit did not happen: nothing to undo
        except Exception as undo_error:
            exc.add_note(f"pgresilience: undoing an unseen result failed: {undo_error!r}")

    def _attempt(self, call: Call[T], *, may_retry: bool, read: list[core.Rows]) -> T:
        with self._connections.connection() as conn:
            _refuse_open_transaction(conn)
            began = False
            try:
                with conn.transaction():
                    began = True
                    cursor = conn.execute(query(call.query), call.params, prepare=False)
                    rows = cursor.fetchall()
                    read.append(rows)
            except psycopg.Error as exc:
                # A pooled connection the server closed while it sat idle
                # (a restart, a failover, an idle timeout) fails at BEGIN,
                # before anything of the call was sent: the pool drops it,
                # and _run tries the call on another connection.
                if may_retry and not began and conn.broken:
                    raise _DeadBeforeTheCall from exc
                return call.on_error(exc)
        return call.parse(rows)

    def close(self) -> None:
        """Close the pool this manager opened for a conninfo (if any); a
        connection or pool the caller gave stays open."""
        self._connections.close()

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

    def transaction(
        self, timeout: float | None = 30.0, label: str | None = None
    ) -> AbstractContextManager[Transaction]:
        """``with``: commit on exit, roll back on exception (then re-raise it)."""
        return self._transaction(timeout, label)

    @contextmanager
    def _transaction(self, timeout: float | None, label: str | None) -> Iterator[Transaction]:
        tx = Transaction(self, self.begin(timeout, label))
        try:
            yield tx
        except BaseException as exc:
            self._roll_back_after(tx.id, exc)
            raise
        try:
            self.commit(tx.id)
        except BaseException as exc:
            # A commit cut short (a cancelled task, Ctrl-C, a lost connection)
            # would leave the transaction active, its rows claimed until it
            # expires. If the commit went through after all, the rollback
            # finds it committed (RZ002) and changes nothing. A commit the
            # database refused (RZ003: expired) stays as it is, for the reaper.
            if core.commit_unanswered(exc):
                self._roll_back_after(tx.id, exc, ended_is_fine=True)
            raise

    def _roll_back_after(
        self, tx_id: str, exc: BaseException, *, ended_is_fine: bool = False
    ) -> None:
        """``transaction()``'s rollback when ``exc`` ends the block; ``exc``
        is the exception to see, a failed rollback only adds a note to it."""
        try:
            # shielded: a task cancelled again meanwhile must not cut it short
            shield(self.rollback(tx_id, reason=core.rollback_reason(exc)))
        except Exception as rollback_error:
            if not (ended_is_fine and isinstance(rollback_error, TransactionNotActive)):
                exc.add_note(f"pgresilience: rollback of {tx_id} failed too: {rollback_error!r}")


class Transaction:
    """The handle ``transaction()`` yields: operations raise on error."""

    def __init__(self, manager: TransactionManager, tx_id: str) -> None:
        self.manager = manager
        self.id = tx_id

    def execute(
        self, table: str, operation: str, data: Any = None, match: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return (self.manager.execute(self.id, table, operation, data, match)).unwrap()

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

    def lock(self, table: str, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Claim the matched rows without writing them and return them (the
        logical ``SELECT ... FOR UPDATE``): read, decide, then write in later
        calls without a lost update."""
        return self.execute(table, "lock", None, match)

    def savepoint(self, name: str) -> dict[str, Any]:
        return self.manager.savepoint(self.id, name)

    def rollback_to(self, name: str) -> dict[str, Any]:
        return self.manager.rollback_to(self.id, name)

    def status(self) -> dict[str, Any]:
        return self.manager.status(self.id)
