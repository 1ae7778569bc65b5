"""The package's exceptions, and the one place that maps database errors to them.

Mapping is by SQLSTATE, never by message text. ``SQLSTATES`` is the one table
of codes: docs/errors.md is generated from it
(``scripts/generate.py``) and a test checks that they agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = [
    "SQLSTATES",
    "ClaimConflict",
    "DatabaseError",
    "InvalidOperation",
    "NotSupported",
    "ObjectInUse",
    "PermissionDenied",
    "PgResilienceError",
    "RollbackConflict",
    "SavepointNotFound",
    "SqlState",
    "TableChanged",
    "conninfo_problem",
    "hide_conninfo",
    "TransactionExpired",
    "TransactionNotActive",
    "TransactionNotFound",
    "UnknownObject",
    "errors_markdown",
    "map_error",
]


class PgResilienceError(Exception):
    """Base class of every exception the package raises.

    ``sqlstate`` is the database's code when one caused it (the psycopg error
    is then ``__cause__``); ``detail`` is always a dict: the database's
    structured detail (our functions raise JSON objects), ``{"message": text}``
    for a plain-text detail, or ``{}``.
    """

    sqlstate: str | None = None

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.detail: dict[str, Any] = dict(detail or {})


class DatabaseError(PgResilienceError):
    """Any other database error (connection lost, a constraint of the user's
    table, ...): its SQLSTATE is kept in ``sqlstate``."""


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


class TableChanged(PgResilienceError):
    """A managed table's columns or key changed since ``manage_table`` and
    nothing regenerated its capture: run ``manage_table`` again (RZ007)."""

    sqlstate = "RZ007"


class ClaimConflict(PgResilienceError):
    """The row is claimed by another logical transaction (SQLSTATE 55P03)."""

    sqlstate = "55P03"


class InvalidOperation(PgResilienceError):
    sqlstate = "22023"


class UnknownObject(InvalidOperation):
    """Unknown table (42P01) or column (42703)."""


class ObjectInUse(PgResilienceError):
    """E.g. unmanaging a table, or detaching a partition, whose rows are still
    claimed (55006)."""

    sqlstate = "55006"


class PermissionDenied(PgResilienceError):
    sqlstate = "42501"


class NotSupported(PgResilienceError):
    sqlstate = "0A000"


@dataclass(frozen=True)
class SqlState:
    """One row of the contract: a code, when the database raises it, and the
    Python class it becomes."""

    code: str
    meaning: str
    error: type[PgResilienceError]


SQLSTATES: tuple[SqlState, ...] = (
    SqlState(
        "RZ001",
        "transaction not found, or not the caller's (existence is not leaked); "
        "malformed id in the x-resilience-tx header",
        TransactionNotFound,
    ),
    SqlState(
        "RZ002", "transaction not active (committed, rolled back, failed)", TransactionNotActive
    ),
    SqlState("RZ003", "transaction expired (or timed out)", TransactionExpired),
    SqlState(
        "RZ005",
        "rollback conflict: a row no longer equals its after-image, or restoring it "
        "violates a constraint; nothing restored (detail lists the rows)",
        RollbackConflict,
    ),
    SqlState("RZ006", "savepoint not found", SavepointNotFound),
    SqlState(
        "RZ007",
        "a managed table changed since manage_table and its capture was not regenerated "
        "(no event triggers, or images of a changed key/type are held): run manage_table again",
        TableChanged,
    ),
    SqlState(
        "55P03",
        "row claimed by another logical transaction (detail names the holder and its "
        "expiry, never the row); row locked by another database transaction (lock); "
        "truncate of a table with claims",
        ClaimConflict,
    ),
    SqlState(
        "55006",
        "unmanage_table, or DETACH PARTITION of one of its partitions, while rows of the "
        "table are claimed; ATTACH PARTITION (or INHERIT) making a managed table a "
        "partition or inheritance child of another table",
        ObjectInUse,
    ),
    SqlState(
        "22023",
        "invalid operation or argument: bad operation, data/match shape, missing match, "
        "a match on a column whose type has no equality, unmanaged table, a table that "
        "cannot be managed (partition, inheritance child, no primary key), upsert without "
        "a primary key, bad timeout, a savepoint name (200), label or reason (1000) too long",
        InvalidOperation,
    ),
    SqlState("22P02", "a value of data/match that the column's type refuses", InvalidOperation),
    # What else a column's type says of a value it refuses.
    SqlState(
        "22001", "a value of data too long for its column (varchar(n), char(n))", InvalidOperation
    ),
    SqlState("22003", "a number of data/match out of its column type's range", InvalidOperation),
    SqlState("22007", "a date/time of data/match in a format its type refuses", InvalidOperation),
    SqlState("22008", "a date/time of data/match out of its type's range", InvalidOperation),
    SqlState("42P01", "unknown table", UnknownObject),
    SqlState("42703", "unknown column", UnknownObject),
    SqlState(
        "42501",
        "permission denied: the target table's grants or RLS, manage_table by a non-owner "
        "or of a table whose undo would run as the package owner, a rollback of a table whose "
        "RLS applies to its owner (FORCE), tx_images by a non-admin, "
        "the shared circuit and schema functions by an end user (authenticated)",
        PermissionDenied,
    ),
    SqlState(
        "0A000",
        "feature not available here (no PL/Python, no privilege), or a statement a logical "
        "transaction cannot take (TRUNCATE, an UPDATE whose moved rows a trigger dropped, "
        "a DELETE or key UPDATE whose foreign-key action reaches a table that is not managed)",
        NotSupported,
    ),
)

_BY_SQLSTATE: dict[str, type[PgResilienceError]] = {s.code: s.error for s in SQLSTATES}


def _detail(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"message": text}


def map_error(exc: psycopg.Error) -> PgResilienceError:
    """The package exception for a psycopg error, with ``exc`` as its
    ``__cause__`` (so it stays chained even when raised later)."""
    sqlstate = exc.sqlstate
    cls = _BY_SQLSTATE.get(sqlstate or "", DatabaseError)
    diag = exc.diag
    message = diag.message_primary or str(exc)
    error = cls(message, sqlstate=sqlstate, detail=_detail(diag.message_detail))
    error.__cause__ = exc
    return error


def errors_markdown() -> str:
    """docs/errors.md, generated from ``SQLSTATES`` and the class hierarchy."""
    lines = [
        "# Errors",
        "",
        "<!-- Generated from pgresilience.errors.SQLSTATES by scripts/generate.py; "
        "do not edit. -->",
        "",
        "Every exception the package raises derives from `pgresilience.PgResilienceError` "
        "and is importable from `pgresilience`. A database error becomes the class of "
        "its SQLSTATE (never matched by message text); the psycopg error is kept as "
        "`__cause__`, the code as `.sqlstate`, and `.detail` is always a dict.",
        "",
        "| SQLSTATE | when | Python class |",
        "|---|---|---|",
    ]
    for s in SQLSTATES:
        lines.append(f"| `{s.code}` | {s.meaning} | `{s.error.__name__}` |")
    lines += [
        "| other | the database's own errors (constraints of your tables, connection "
        "lost, ...), SQLSTATE kept | `DatabaseError` |",
        "",
        "Outside the database: `CircuitOpenError` (a circuit rejected the call; "
        "`.retry_after` seconds) also derives from `PgResilienceError`.",
        "",
    ]
    return "\n".join(lines)


def hide_conninfo(message: str, conninfo: str) -> str:
    """``message`` without ``conninfo`` or any quoted piece of it: libpq's
    parse errors quote the string, or the piece where they stopped, and
    either may hold a password (messages end up in logs)."""

    def hidden(quoted: re.Match[str]) -> str:
        piece = quoted[1]
        return '"..."' if len(piece) > 1 and piece in conninfo else quoted[0]

    return re.sub(r'"([^"]*)"', hidden, message).replace(conninfo, "...")


def conninfo_problem(conninfo: str) -> str | None:
    """Why ``conninfo`` is neither a libpq conninfo nor a URL, in one line
    that repeats nothing of it; None when it parses. A SQLAlchemy URL
    (``postgresql+psycopg://``), a common ``DATABASE_URL``, is named."""
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        message = hide_conninfo(" ".join(str(exc).split()), conninfo)
        sqlalchemy = re.match(r"(postgres(?:ql)?)\+[^:/@]*://", conninfo)
        if sqlalchemy:
            message += (
                f" (a SQLAlchemy URL: libpq's starts with {sqlalchemy[1]}://, without the +driver)"
            )
        return f"not a conninfo or URL: {message}"
    return None
