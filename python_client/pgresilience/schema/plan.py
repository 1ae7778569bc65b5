"""`pgresilience plan`: a CI gate that runs a migration for real, in one
transaction, prints the changes schema tracking would record (with their
severities), and rolls everything back.

Exit codes: 0 when every change is below ``--fail-on``, 1 when one is at or
above it, 2 when the migration itself fails (its error is printed; nothing is
committed). Because the migration really runs, DO blocks and dynamic SQL are
seen as PostgreSQL executes them, which parsing linters cannot do.
"""

from __future__ import annotations

import argparse
import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pgresilience.queries import query
from pgresilience.schema import diff
from pgresilience.schema._core import ChangeList

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_THRESHOLD", "PlanResult", "add_arguments", "plan", "run"]

EXIT_OK, EXIT_THRESHOLD, EXIT_FAILED = 0, 1, 2

# A migration file wrapped in BEGIN; ... COMMIT; is one transaction already:
# the wrapper is dropped (any other transaction control fails the plan).
# Comments of either kind may come before BEGIN and after COMMIT.
_COMMENT = r"--[^\n]*(?:\n|\Z)|/\*.*?\*/"
_LEADING_BEGIN = re.compile(
    rf"\A(?:\s|{_COMMENT})*(?:begin|start\s+transaction)(?:\s+(?:work|transaction))?\s*;",
    re.I | re.S,
)
_TRAILING_COMMIT = re.compile(
    # Not the end of a name (`... rename to backend;`).
    rf"(?<![\w$\"])(?:commit|end)(?:\s+(?:work|transaction))?\s*;?(?:\s|{_COMMENT})*\Z",
    re.I | re.S,
)


@dataclass(frozen=True)
class PlanResult:
    """What a plan found: the rated changes, or the migration's error."""

    changes: ChangeList | None
    error: str | None = None
    sqlstate: str | None = None
    # Where it failed: "migration", or "setup"/"preview" (the migration did
    # not run, or ran and the preview could not).
    stage: str = "migration"

    def exit_code(self, fail_on: str) -> int:
        if self.changes is None:
            return EXIT_FAILED
        worst = self.changes.max_severity
        rank = diff.module().SEVERITIES.index
        return EXIT_THRESHOLD if worst is not None and rank(worst) >= rank(fail_on) else EXIT_OK

    def as_json(self, fail_on: str) -> dict[str, Any]:
        changes = self.changes
        return {
            "ok": changes is not None,
            "exit_code": self.exit_code(fail_on),
            "fail_on": fail_on,
            "error": None
            if self.error is None
            else {"sqlstate": self.sqlstate, "message": self.error},
            "max_severity": None if changes is None else changes.max_severity,
            "change_count": None if changes is None else len(changes),
            "tables": [] if changes is None else changes.tables,
            "changes": [] if changes is None else list(changes),
        }


def strip_transaction_wrapper(text: str) -> str:
    """``BEGIN; <migration> COMMIT;`` -> ``<migration>`` (only both together)."""
    head = _LEADING_BEGIN.match(text)
    tail = _TRAILING_COMMIT.search(text)
    if head and tail and head.end() <= tail.start():
        return text[head.end() : tail.start()]
    return text


def _failure(exc: psycopg.Error, stage: str = "migration") -> PlanResult:
    diag = exc.diag
    message = diag.message_primary or str(exc)
    if diag.message_detail:
        message += f"\nDETAIL: {diag.message_detail}"
    if diag.context:
        message += f"\nCONTEXT: {diag.context.strip()}"
    return PlanResult(changes=None, error=message, sqlstate=exc.sqlstate, stage=stage)


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(query("schema_plan_version")).fetchone()
    assert row is not None
    return int(row[0] or 0)


def _preview(conn: psycopg.Connection[Any], before: int) -> ChangeList:
    """What the migration's transaction records: the versions a SET
    CONSTRAINTS ALL IMMEDIATE in it already folded (after ``before``), then
    the preview of the DDL since, as one change list."""
    rows = conn.execute(query("schema_changes_since"), (before,)).fetchall()
    row = conn.execute(query("schema_preview")).fetchone()
    assert row is not None
    parts = [ChangeList.from_row(r[0]) for r in rows] + [ChangeList.from_row(row[0])]
    last = parts[-1]
    if len(parts) == 1:
        return last
    changes = [c for part in parts for c in part]
    tables = list(dict.fromkeys(t for part in parts for t in part.tables))
    return ChangeList(
        changes,
        version=last.version,
        hash=last.hash,
        max_severity=diff.max_severity(changes),
        tables=tables,
        origin=last.origin,
        diffed_in=last.diffed_in,
    )


def _rollback(conn: psycopg.Connection[Any]) -> None:
    # A backend killed mid-migration (an operator, a lock-timeout reaper)
    # leaves no transaction to roll back: the migration's error is the
    # verdict (exit 2), not "cannot connect".
    if not conn.closed:
        conn.rollback()


def plan_sql(dsn: str, migration: str) -> PlanResult:
    """Run ``migration`` (SQL text) in one transaction, preview, roll back."""
    with psycopg.connect(dsn) as conn:  # not autocommit: one transaction
        try:
            conn.execute(query("schema_plan_runner"))
            before = _version(conn)
        except psycopg.Error as exc:  # e.g. pgresilience not installed there
            _rollback(conn)
            return _failure(exc, "setup")
        try:
            conn.execute(query("schema_plan_run"), (strip_transaction_wrapper(migration),))
            # The commit's fold runs whatever role the migration switched to
            # (SECURITY DEFINER); the preview runs as the plan's own role.
            conn.execute(query("schema_plan_reset_role"))
        except psycopg.Error as exc:
            _rollback(conn)
            return _failure(exc)
        try:
            return PlanResult(changes=_preview(conn, before))
        except psycopg.Error as exc:  # e.g. a statement_timeout the migration set
            return _failure(exc, "preview")
        finally:
            _rollback(conn)


def _alembic_config(location: Path, connection: Any) -> Any:
    from alembic.config import Config

    config = Config(str(location)) if location.is_file() else Config()
    if not location.is_file():
        config.set_main_option("script_location", str(location))
    # env.py must run on this connection (Alembic's "sharing a connection"
    # recipe, config.attributes["connection"]). One that opens its own from
    # sqlalchemy.url gets an address that cannot connect, not the database.
    config.set_main_option(
        "sqlalchemy.url", "postgresql+psycopg://plan-uses-its-own-connection.invalid/"
    )
    config.attributes["connection"] = connection
    return config


class _TransactionControl(Exception):
    """A migration tried to end the plan's transaction."""


# Statements that end the transaction (a revision's `op.execute("COMMIT")`,
# the old recipe for ALTER TYPE ... ADD VALUE): run on the plan's connection
# they would commit the migration for real. ROLLBACK TO (a savepoint) is safe.
_ENDS_TRANSACTION = re.compile(
    rf"\A(?:\s|{_COMMENT})*(?:commit|end|abort|prepare\s+transaction"
    r"|rollback(?!\s+(?:work\s+|transaction\s+)?to\b))\b",
    re.I | re.S,
)
_ENDED_MESSAGE = (
    "the migration ended the plan's transaction ({what}): transaction control cannot be planned"
)


def _guard_transaction(engine: Any) -> None:
    """Refuse, before it reaches the server, what would commit the plan."""
    from sqlalchemy import event

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if _ENDS_TRANSACTION.match(sql):
            raise _TransactionControl(_ENDED_MESSAGE.format(what=" ".join(sql.split())[:60]))

    def commit(conn: Any) -> None:
        raise _TransactionControl(_ENDED_MESSAGE.format(what="Connection.commit()"))

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)


def _transaction_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(query("schema_plan_transaction")).fetchone()
    assert row is not None
    return int(row[0])


def plan_alembic(dsn: str, location: Path, revision: str = "head") -> PlanResult:
    """``alembic upgrade head`` in one transaction on our connection, preview, roll back.
    ``location``: alembic.ini, or the script directory (with env.py)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    _guard_transaction(engine)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            raw = connection.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            try:
                for name in ("table", "function", "trigger", "arm"):
                    raw.execute(query(f"schema_plan_guard_{name}"))
                before = _version(raw)
                xid = _transaction_id(raw)
                command.upgrade(_alembic_config(location, connection), revision)
                if _transaction_id(raw) != xid:
                    # Ended in a way no guard saw (a COMMIT among several
                    # statements, the driver's own commit()): say so plainly.
                    return PlanResult(
                        changes=None,
                        error=_ENDED_MESSAGE.format(what="a COMMIT")
                        + "; what ran before it WAS COMMITTED",
                        sqlstate="0A000",
                    )
                raw.execute(query("schema_plan_reset_role"))
                return PlanResult(changes=_preview(raw, before))
            except psycopg.Error as exc:
                return _failure(exc)
            except _TransactionControl as exc:
                return PlanResult(changes=None, error=str(exc), sqlstate="0A000")
            except Exception as exc:  # SQLAlchemy wraps the driver's error
                cause = getattr(exc, "orig", None)
                if isinstance(cause, psycopg.Error):
                    return _failure(cause)
                if isinstance(cause, _TransactionControl):
                    return PlanResult(changes=None, error=str(cause), sqlstate="0A000")
                if "autocommit_block" in {f.name for f in traceback.extract_tb(exc.__traceback__)}:
                    # Alembic asserts when the transaction is not its own.
                    what = "an autocommit_block() (it commits what ran before it)"
                    return PlanResult(
                        changes=None, error=_ENDED_MESSAGE.format(what=what), sqlstate="0A000"
                    )
                return PlanResult(changes=None, error=f"{type(exc).__name__}: {exc}")
            finally:
                if not raw.closed:
                    transaction.rollback()
    finally:
        engine.dispose()


def plan(dsn: str, path: Path, *, alembic: bool = False) -> PlanResult:
    if alembic:
        return plan_alembic(dsn, path)
    # utf-8-sig: a byte order mark (editors on Windows write one) is not SQL.
    return plan_sql(dsn, path.read_text(encoding="utf-8-sig"))


def table_lines(changes: ChangeList) -> list[str]:
    """A readable table: severity, change type, where, reason."""
    rows = [("SEVERITY", "CHANGE", "WHERE", "REASON")]
    for c in changes:
        where = c.get("table") or c.get("object") or ""
        if c.get("column"):
            where = f"{where}.{c['column']}"
        elif c.get("object") and c.get("object") != c.get("table"):
            where = f"{where} {c['object']}".strip()
        rows.append((str(c["severity"]), str(c["type"]), where, str(c["reason"])))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(r)).rstrip()
        for r in rows
    ]


def report_lines(result: PlanResult, fail_on: str) -> list[str]:
    if result.changes is None:
        what = {
            "setup": "the plan could not start (the migration did not run)",
            "preview": "the migration ran but its preview failed",
        }.get(result.stage, "migration failed")
        return [
            f"{what} (SQLSTATE {result.sqlstate or '?'}); nothing was committed:",
            *(f"  {line}" for line in (result.error or "").splitlines()),
        ]
    changes = result.changes
    if not changes:
        lines = ["no schema change"]
    else:
        lines = table_lines(changes)
    code = result.exit_code(fail_on)
    verdict = "at or above" if code == EXIT_THRESHOLD else "below"
    lines.append(
        f"{len(changes)} change(s), max severity {changes.max_severity or 'none'}: "
        f"{verdict} --fail-on {fail_on}; rolled back"
    )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `plan` subcommand's arguments (cli.py adds --dsn)."""
    parser.add_argument(
        "file",
        type=Path,
        help="migration SQL file (with --alembic: alembic.ini or its script directory)",
    )
    parser.add_argument(
        "--alembic", action="store_true", help="run `alembic upgrade head` instead of a SQL file"
    )
    parser.add_argument(
        "--fail-on",
        default="high",
        choices=list(diff.module().SEVERITIES),
        help="exit 1 when a change is at or above this severity (default: high)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (for CI) instead of a table"
    )


def run(args: argparse.Namespace, dsn: str, say: Callable[[str], None] = print) -> int:
    """The `plan` command: prints the report, returns the exit code."""
    result = plan(dsn, args.file, alembic=args.alembic)
    if args.json:
        say(json.dumps(result.as_json(args.fail_on), indent=2, default=str))
    else:
        for line in report_lines(result, args.fail_on):
            say(line)
    return result.exit_code(args.fail_on)
