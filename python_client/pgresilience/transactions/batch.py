"""Atomic batches: ``TransactionManager.run(operations)`` -> ``resilience.tx_run``.

The whole batch is ONE real database transaction: every operation commits or
none does. An operation is ``{"table", "operation", "data", "match"}`` (as
``execute``'s arguments); a later operation can use a value an earlier one
returned with ``ref(index, column)``, i.e. ``{"$ref": "<index>.<column>"}``
(first row of that operation's result) or ``ref(index, column, row=n)``.

Like every call of ``core``, the logic is sans-I/O: ``run(operations)``
describes the call, and the managers execute it (sync or async).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgresilience.errors import PgResilienceError, map_error
from pgresilience.jsonvalues import to_jsonb
from pgresilience.transactions.core import Call

__all__ = [
    "BatchResult",
    "OperationResult",
    "batch_error",
    "batch_params",
    "operation",
    "parse_result",
    "ref",
    "run",
]


def operation(
    table: str, op: str, data: Any = None, match: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One batch operation, e.g. ``operation("users", "insert", {"name": "John"})``."""
    spec: dict[str, Any] = {"table": table, "operation": op}
    if data is not None:
        spec["data"] = data
    if match is not None:
        spec["match"] = dict(match)
    return spec


def ref(index: int, column: str, *, row: int | None = None) -> dict[str, str]:
    """A value taken from an earlier operation's result: column ``column`` of
    its first row, or of row ``row`` (0-based). A column whose name starts
    with digits and a dot (``"2.x"``) is written with its row explicitly:
    ``"0.2.x"`` would read as row 2, column ``x``."""
    if index < 0 or (row is not None and row < 0):
        raise ValueError("operation and row indexes are 0-based and not negative")
    if row is None and re.match(r"[0-9]+[.]", column):
        row = 0
    path = f"{index}.{column}" if row is None else f"{index}.{row}.{column}"
    return {"$ref": path}


@dataclass(frozen=True)
class OperationResult:
    """What one operation wrote: the rows as the table returned them."""

    data: list[dict[str, Any]]
    count: int


@dataclass(frozen=True)
class BatchResult:
    """Outcome of ``run``: as with ``execute``, a failure is reported, not
    raised. ``error.detail`` then says which operation failed:
    ``{"index", "table", "operation", "error", "detail"}``."""

    success: bool
    results: list[OperationResult] = field(default_factory=list)
    error: PgResilienceError | None = None

    @property
    def data(self) -> list[list[dict[str, Any]]]:
        """The rows of every operation, in order."""
        return [r.data for r in self.results]

    def unwrap(self) -> list[list[dict[str, Any]]]:
        """The rows of every operation, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.data

    def __getitem__(self, index: int) -> OperationResult:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)


def batch_params(operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Parameters of the ``batch_run`` query. The database validates the
    operations; here we only refuse what is not a list of objects."""
    if isinstance(operations, Mapping | str | bytes):
        raise TypeError("operations must be a list of operation objects, not a single one")
    specs = [dict(spec) for spec in operations]
    return {"operations": to_jsonb(specs)}


def parse_result(rows: Sequence[Sequence[Any]]) -> BatchResult:
    """tx_run's jsonb result -> BatchResult."""
    value = rows[0][0]
    if not isinstance(value, Mapping) or "results" not in value:
        raise PgResilienceError(f"unexpected tx_run result: {value!r}")
    results = [
        OperationResult(data=list(entry.get("data") or []), count=int(entry.get("count") or 0))
        for entry in value["results"]
    ]
    return BatchResult(success=bool(value.get("success")), results=results)


def batch_error(exc: psycopg.Error) -> PgResilienceError:
    """The package exception for a failed batch. Its class follows the
    SQLSTATE of the operation that failed; ``.detail`` is the dict
    ``{"index", "table", "operation", "error", "detail"}`` (or the database's
    own detail when the batch as a whole was refused)."""
    return map_error(exc)


def _failed(exc: psycopg.Error) -> BatchResult:
    return BatchResult(success=False, error=batch_error(exc))


def run(operations: Iterable[Mapping[str, Any]]) -> Call[BatchResult]:
    """The ``tx_run`` call, for ``TransactionManager.run`` and
    ``AsyncTransactionManager.run`` to execute like every other call."""
    return Call("batch_run", batch_params(operations), parse_result, _failed)
