"""The owner's own rollback under its own limits: a statement_timeout, a
lock_timeout against a frozen backend's row lock, a deadlock with its own
write racing it. Each fails with the database's SQLSTATE for what happened
(57014, 55P03, 40P01: retry), never RZ005 (which says the rows are in the
way and invites `force`), and leaves the transaction exactly as it was."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from .conftest import (
    GATE_KEY,
    audit_events,
    backend_pid,
    call,
    claims_of,
    expire,
    frozen,
    gate_closed,
    rows_text,
    sqlstate_of,
    tx_row,
    wait_until_waiting,
)

FIRST = ["(1,10,n1)", "(2,20,n2)", "(3,30,n3)", "(4,40,n4)", "(5,50,n5)"]


def _two_writes(conn: psycopg.Connection[Any]) -> Any:
    tx = call(conn, "tx_begin", 600000)
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    call(conn, "tx_execute", tx, "items", "update", {"v": 5}, {"id": 5})
    return tx


def _state(conn: psycopg.Connection[Any], tx: Any) -> tuple[Any, ...]:
    return (
        rows_text(conn, "items"),
        tx_row(conn, tx)[0],
        claims_of(conn, tx),
        audit_events(conn, tx),
    )


def _rolls_back_in_full(conn: psycopg.Connection[Any], tx: Any) -> None:
    assert call(conn, "tx_rollback", tx)["status"] == "rolled_back"
    assert rows_text(conn, "items") == FIRST
    assert claims_of(conn, tx) == 0


def test_rollback_cut_by_its_statement_timeout_is_57014_and_changes_nothing(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    before = _state(conn, tx)
    with gate_closed(dsn), psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute("set statement_timeout = '200ms'")
        assert sqlstate_of(call, owner, "tx_rollback", tx) == "57014"
    assert _state(conn, tx) == before
    _rolls_back_in_full(conn, tx)


def test_rollback_under_lock_timeout_against_a_frozen_row_lock_is_55p03(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    before = _state(conn, tx)
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as owner:
        holder.execute("select from items where id = 1 for share")
        with frozen(backend_pid(holder)):
            owner.execute("set lock_timeout = '100ms'")
            assert sqlstate_of(call, owner, "tx_rollback", tx) == "55P03"
            assert _state(conn, tx) == before
        holder.rollback()
    _rolls_back_in_full(conn, tx)


def test_rollback_deadlocked_by_the_owners_racing_write_is_40p01_to_retry(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    before = _state(conn, tx)
    results: dict[str, Any] = {}
    with gate_closed(dsn) as keeper:
        with (
            psycopg.connect(dsn, autocommit=True) as owner,
            psycopg.connect(dsn, autocommit=True) as writer,
        ):
            writer.execute("set deadlock_timeout = '1h'")  # the rollback detects it
            owner_pid, writer_pid = backend_pid(owner), backend_pid(writer)

            def rollback() -> None:
                results["rollback"] = sqlstate_of(call, owner, "tx_rollback", tx)

            def write() -> None:
                with writer.transaction():
                    writer.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
                    writer.execute("update items set v = 7 where id = 1")

            rolling = threading.Thread(target=rollback)
            rolling.start()
            wait_until_waiting(keeper, owner_pid)  # undoing row 5, at the gate
            writing = threading.Thread(target=write)
            writing.start()
            wait_until_waiting(keeper, writer_pid)  # holds row 1, waits for the rollback
            keeper.execute("select pg_advisory_unlock(%s)", (GATE_KEY,))
            rolling.join(60)
            writing.join(60)
    assert results["rollback"] == "40P01"
    rows, status, claims, events = _state(conn, tx)
    assert (status, claims, events) == (before[1], before[2], [*before[3], "execute"])
    assert rows[0] == "(1,7,n1)"  # the write that won went into the transaction
    _rolls_back_in_full(conn, tx)


@pytest.mark.xfail(
    strict=True,
    reason="a cancelled explicit tx_reap (pg_cancel_backend of a janitor stuck on a row lock) "
    "marks the transaction failed: rows unrestored, claims released",
)
def test_cancelling_a_stuck_explicit_reap_leaves_the_transaction_for_a_later_reap(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    expire(conn, tx)
    results: dict[str, Any] = {}
    with (
        psycopg.connect(dsn) as holder,
        psycopg.connect(dsn, autocommit=True) as janitor,
        psycopg.connect(dsn, autocommit=True) as admin,
    ):
        holder.execute("select from items where id = 1 for share")
        pid = backend_pid(janitor)
        with frozen(backend_pid(holder)):
            reaping = threading.Thread(
                target=lambda: results.setdefault("reap", sqlstate_of(call, janitor, "tx_reap"))
            )
            reaping.start()
            wait_until_waiting(admin, pid)
            admin.execute("select pg_cancel_backend(%s)", (pid,))
            reaping.join(60)
        holder.rollback()
    assert tx_row(conn, tx)[0] == "active"
    assert claims_of(conn, tx) == 2
