"""The oracle: a real ROLLBACK is the reference for a logical one.

``Step`` is one client action (a tx_execute operation, a savepoint, a
rollback to a savepoint). ``run_real`` applies the steps inside ONE real
database transaction (each write through ``tx_run``, the same statement
builder as tx_execute, so what is compared is capture and undo, not how a
statement is built; savepoints are SQL savepoints) and returns the state it
reached and each step's SQLSTATE, then rolls back. ``run_logical`` applies
them as separate calls in a logical transaction. The tests compare the two
states and errors, then the state after the logical rollback (or commit)
with the state before (or the state reached)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .conftest import begin, call, execute


@dataclass(frozen=True)
class Step:
    kind: str  # insert|update|delete|upsert|lock|savepoint|rollback_to
    data: Any = None
    match: Any = None
    name: str = ""
    table: str = ""  # when not the scenario's default table

    def __repr__(self) -> str:  # readable hypothesis reports
        if self.kind in ("savepoint", "rollback_to"):
            return f"{self.kind}({self.name!r})"
        where = f"{self.table}." if self.table else ""
        return f"{where}{self.kind}(data={self.data!r}, match={self.match!r})"


Snapshot = Callable[[], Any]


def run_real(
    conn: psycopg.Connection[Any], table: str, steps: list[Step], snapshot: Snapshot
) -> tuple[Any, list[str | None]]:
    """The steps in one real transaction, rolled back; (state reached, SQLSTATEs)."""
    errors: list[str | None] = []
    state: Any = None
    conn.execute("begin")
    try:
        # each logical call is its own database transaction: deferred
        # constraints are checked at the end of the call, not at a far COMMIT
        conn.execute("set constraints all immediate")
        for i, step in enumerate(steps):
            if step.kind == "savepoint":
                conn.execute(sql.SQL("savepoint {}").format(sql.Identifier("u_" + step.name)))
                errors.append(None)
                continue
            if step.kind == "rollback_to":
                conn.execute(
                    sql.SQL("rollback to savepoint {}").format(sql.Identifier("u_" + step.name))
                )
                errors.append(None)
                continue
            target = step.table or table
            marker = sql.Identifier(f"op_{i}")
            conn.execute(sql.SQL("savepoint {}").format(marker))
            try:
                if step.kind == "lock":
                    # tx_run has no lock: a lock changes no row, so FOR UPDATE stands in.
                    # regclass::text is the table's name, quoted as needed
                    row = conn.execute("select to_regclass(%s)::text", (target,)).fetchone()
                    assert row is not None and row[0] is not None
                    relation = sql.SQL(row[0])
                    conditions = sql.SQL(" and ").join(
                        sql.SQL("t.{} = (jsonb_populate_record(null::{}, %s)).{}").format(
                            sql.Identifier(column), relation, sql.Identifier(column)
                        )
                        for column in step.match
                    )
                    conn.execute(
                        sql.SQL("select from {} as t where {} for update").format(
                            relation, conditions
                        ),
                        [Jsonb(step.match)] * len(step.match),
                    )
                else:
                    operation = {"table": target, "operation": step.kind}
                    if step.data is not None:
                        operation["data"] = step.data
                    if step.match is not None:
                        operation["match"] = step.match
                    conn.execute("select resilience.tx_run(%s)", (Jsonb([operation]),))
                conn.execute(sql.SQL("release savepoint {}").format(marker))
                errors.append(None)
            except psycopg.Error as error:
                conn.execute(sql.SQL("rollback to savepoint {}").format(marker))
                errors.append(_unwrap_batch(error))
        state = snapshot()
    finally:
        conn.execute("rollback")
    return state, errors


def _unwrap_batch(error: psycopg.Error) -> str | None:
    return error.sqlstate


def run_logical(
    conn: psycopg.Connection[Any], tx: str, table: str, steps: list[Step]
) -> list[str | None]:
    """The steps as separate calls of logical transaction ``tx``; their SQLSTATEs."""
    errors: list[str | None] = []
    for step in steps:
        try:
            if step.kind == "savepoint":
                call(conn, "tx_savepoint", tx, step.name)
            elif step.kind == "rollback_to":
                call(conn, "tx_rollback_to", tx, step.name)
            else:
                target = step.table or table
                result = execute(conn, tx, target, step.kind, step.data, step.match)
                assert result["success"] is True
            errors.append(None)
        except psycopg.Error as error:
            errors.append(error.sqlstate)
    return errors


def check_scenario(
    observer: psycopg.Connection[Any],
    calls: psycopg.Connection[Any],
    ender: psycopg.Connection[Any],
    table: str,
    steps: list[Step],
    ending: str,
    snapshot: Snapshot,
    real_snapshot: Snapshot | None = None,
) -> None:
    """The oracle's assertions for one scenario: ``calls`` runs the real
    transaction and then the logical one; ``ender`` (another session) commits
    or rolls the logical one back; ``observer`` takes every snapshot outside
    them (``real_snapshot`` inside the real transaction, on ``calls``)."""
    before = snapshot()
    reached, real_errors = run_real(calls, table, steps, real_snapshot or snapshot)
    assert snapshot() == before
    tx = begin(calls)
    try:
        logical_errors = run_logical(calls, tx, table, steps)
        assert logical_errors == real_errors, (logical_errors, real_errors)
        assert snapshot() == reached
        if ending == "rollback":
            result = call(ender, "tx_rollback", tx)
            assert result["success"] is True, result
            assert result["conflicts"] == []
            assert snapshot() == before
        else:
            call(ender, "tx_commit", tx)
            assert snapshot() == reached
    finally:
        # a failed example must not leave claims behind for the next one
        observer.execute(
            "select resilience.tx_rollback(id, 'cleanup', true)"
            " from resilience.transactions where id = %s and status = 'active'",
            (tx,),
        )
