"""The transaction client's logic, without I/O.

Every API call is described once, here, as a ``Call``: which named query to
send, with which parameters, and how to read its result or its error. The
sync and async managers only run calls (``manager.py``), so the logic exists
once for both.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import psycopg

from pgresilience.errors import InvalidOperation, PgResilienceError, map_error
from pgresilience.jsonvalues import to_jsonb

__all__ = [
    "OPERATIONS",
    "Call",
    "ExecuteResult",
    "TxId",
    "active",
    "begin",
    "commit",
    "commit_unanswered",
    "execute",
    "raise_mapped",
    "reap",
    "rollback",
    "rollback_reason",
    "rollback_to",
    "savepoint",
    "status",
]

T = TypeVar("T")
TxId = str | uuid.UUID
Rows = Sequence[Sequence[Any]]
OPERATIONS = ("insert", "update", "delete", "upsert", "lock")


def raise_mapped(exc: psycopg.Error) -> NoReturn:
    """The one place a database error becomes a package exception."""
    raise map_error(exc) from exc


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC: a named query (``queries/transactions.sql``), its parameters,
    how to turn the rows into the result, and what a database error becomes
    (by default: raised as the package exception for its SQLSTATE)."""

    query: str
    params: Mapping[str, Any]
    parse: Callable[[Rows], T]
    on_error: Callable[[psycopg.Error], T] = field(default=raise_mapped)
    #: the call that undoes this one's result when the caller never sees it
    #: (interrupted once the statement had run: its commit may have happened)
    undo: Callable[[T], Call[Any]] | None = None


@dataclass(frozen=True)
class ExecuteResult:
    """Outcome of ``execute``: an operation error is reported, not raised."""

    success: bool
    data: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    error: PgResilienceError | None = None

    def unwrap(self) -> list[dict[str, Any]]:
        """The rows, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.data


def _scalar(rows: Rows) -> Any:
    return rows[0][0]


def _object(rows: Rows) -> dict[str, Any]:
    value = _scalar(rows)
    if not isinstance(value, dict):
        raise PgResilienceError(f"unexpected result: {value!r}")
    return value


def _tx(tx_id: TxId) -> str:
    return str(tx_id)


_INT4_MAX = 2**31 - 1


def _timeout_ms(timeout: float | None) -> int | None:
    """Seconds -> tx_begin's integer milliseconds. The database checks the
    range (22023); a value no integer carries is refused here with the same
    error, and a non-positive one is sent as is (never rounded up to 1 ms)."""
    if timeout is None:
        return None
    if not math.isfinite(timeout) or abs(timeout) * 1000 > _INT4_MAX:
        raise InvalidOperation(f"timeout {timeout!r} is no number of seconds tx_begin can take")
    millis = round(timeout * 1000)
    return max(1, millis) if timeout > 0 else millis


def begin(timeout: float | None = 30.0, label: str | None = None) -> Call[str]:
    """``timeout`` in seconds (None: the database's default_timeout_ms)."""
    return Call(
        "tx_begin",
        {"timeout_ms": _timeout_ms(timeout), "label": label},
        lambda rows: str(_scalar(rows)),
        undo=lambda tx_id: rollback(tx_id, "begun by a call that was interrupted"),
    )


def _execute_result(rows: Rows) -> ExecuteResult:
    value = _object(rows)
    return ExecuteResult(
        success=bool(value.get("success")),
        data=list(value.get("data") or []),
        count=int(value.get("count") or 0),
    )


def _execute_failed(exc: psycopg.Error) -> ExecuteResult:
    return ExecuteResult(success=False, error=map_error(exc))


def execute(
    tx_id: TxId,
    table: str,
    operation: str,
    data: Any = None,
    match: Mapping[str, Any] | None = None,
) -> Call[ExecuteResult]:
    params = {
        "tx_id": _tx(tx_id),
        "table": table,
        "operation": operation,
        "data": None if data is None else to_jsonb(data),
        "match": None if match is None else to_jsonb(dict(match)),
    }
    return Call("tx_execute", params, _execute_result, _execute_failed)


def savepoint(tx_id: TxId, name: str) -> Call[dict[str, Any]]:
    return Call("tx_savepoint", {"tx_id": _tx(tx_id), "name": name}, _object)


def rollback_to(tx_id: TxId, name: str) -> Call[dict[str, Any]]:
    return Call("tx_rollback_to", {"tx_id": _tx(tx_id), "name": name}, _object)


def commit(tx_id: TxId) -> Call[dict[str, Any]]:
    return Call("tx_commit", {"tx_id": _tx(tx_id)}, _object)


def rollback(tx_id: TxId, reason: str | None = None, force: bool = False) -> Call[dict[str, Any]]:
    return Call("tx_rollback", {"tx_id": _tx(tx_id), "reason": reason, "force": force}, _object)


def status(tx_id: TxId) -> Call[dict[str, Any]]:
    return Call("tx_status", {"tx_id": _tx(tx_id)}, _object)


def active() -> Call[list[dict[str, Any]]]:
    return Call("tx_active", {}, lambda rows: [dict(r[0]) for r in rows])


def reap(max_count: int = 100) -> Call[int]:
    return Call("tx_reap", {"max_count": max_count}, lambda rows: int(_scalar(rows)))


#: What tx_commit itself answers when it refuses a commit: its verdicts on
#: the transaction (not found, not active, expired), a permission, an argument.
_COMMIT_REFUSALS = ("RZ", "42501", "22")


def commit_unanswered(exc: BaseException) -> bool:
    """Whether a commit that raised ``exc`` left the transaction's fate
    unknown, or ended before its verdict: interrupted (a cancelled task,
    Ctrl-C), its connection lost, or cut short by the server (a
    statement_timeout or lock_timeout, a cancel, a deadlock: its database
    transaction rolled back, the logical one is still active), rather than
    refused by the database (RZ002, RZ003, ...), whose answer stands."""
    if not isinstance(exc, PgResilienceError):
        return True
    return exc.sqlstate is None or not exc.sqlstate.startswith(_COMMIT_REFUSALS)


def rollback_reason(exc: BaseException) -> str:
    """The reason recorded when ``transaction()`` rolls back on an exception.
    Whatever the exception's text, it must not stop the rollback: a ``__str__``
    that raises, a NUL byte or a lone surrogate (a filename decoded with
    ``surrogateescape``) would fail the call before it reached the database."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = f"{type(exc).__name__} (its text could not be read)"
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:500]
