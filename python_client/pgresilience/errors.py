"""The package's exceptions, and the one place that maps database errors to them.

Mapping is by SQLSTATE, never by message text. The codes are listed in
docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = [
    "ClaimConflict",
    "DatabaseError",
    "InvalidOperation",
    "NotSupported",
    "ObjectInUse",
    "PermissionDenied",
    "PgResilienceError",
    "RollbackConflict",
    "SavepointNotFound",
    "TransactionExpired",
    "TransactionNotActive",
    "TransactionNotFound",
    "UnknownObject",
    "map_error",
]


class PgResilienceError(Exception):
    """Base class. ``sqlstate`` is the database's code when one caused it."""

    sqlstate: str | None = None

    def __init__(self, message: str, *, sqlstate: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.detail = detail


class DatabaseError(PgResilienceError):
    """Any other database error."""


class TransactionNotFound(PgResilienceError):
    sqlstate = "RZ001"


class TransactionNotActive(PgResilienceError):
    sqlstate = "RZ002"


class TransactionExpired(TransactionNotActive):
    sqlstate = "RZ003"


class RollbackConflict(PgResilienceError):
    sqlstate = "RZ005"


class SavepointNotFound(PgResilienceError):
    sqlstate = "RZ006"


class ClaimConflict(PgResilienceError):
    """The row is claimed by another logical transaction (SQLSTATE 55P03)."""

    sqlstate = "55P03"


class InvalidOperation(PgResilienceError):
    sqlstate = "22023"


class UnknownObject(InvalidOperation):
    """Unknown table (42P01) or column (42703)."""


class ObjectInUse(PgResilienceError):
    """E.g. unmanaging a table whose rows are still claimed (55006)."""

    sqlstate = "55006"


class PermissionDenied(PgResilienceError):
    sqlstate = "42501"


class NotSupported(PgResilienceError):
    sqlstate = "0A000"


_BY_SQLSTATE: dict[str, type[PgResilienceError]] = {
    "RZ001": TransactionNotFound,
    "RZ002": TransactionNotActive,
    "RZ003": TransactionExpired,
    "RZ005": RollbackConflict,
    "RZ006": SavepointNotFound,
    "55P03": ClaimConflict,
    "55006": ObjectInUse,
    "22023": InvalidOperation,
    "22P02": InvalidOperation,  # invalid text representation (bad JSON value for a column)
    "42P01": UnknownObject,
    "42703": UnknownObject,
    "42501": PermissionDenied,
    "0A000": NotSupported,
}


def map_error(exc: psycopg.Error) -> PgResilienceError:
    """The package exception for a psycopg error (chain it with ``from exc``)."""
    sqlstate = exc.sqlstate
    cls = _BY_SQLSTATE.get(sqlstate or "", DatabaseError)
    diag = exc.diag
    message = diag.message_primary or str(exc)
    detail = diag.message_detail
    return cls(message, sqlstate=sqlstate, detail=detail)
