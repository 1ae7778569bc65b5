"""Every call on a transaction in every state answers with the documented
SQLSTATE (docs/errors.md): RZ003 expired or timed out, RZ002 committed,
rolled back or failed, RZ001 another user's; a rollback of a rolled-back or
timed-out transaction is a harmless no-op; an expired transaction not yet
reaped can still be rolled back by its owner. And two sessions racing on one
transaction (commit against rollback, reap against rollback) end with exactly
one outcome, its audit rows, and nobody waiting on a claim."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .conftest import (
    audit_events,
    backend_pid,
    call,
    claims_of,
    expire,
    gate_closed,
    rows_text,
    sqlstate_of,
    tx_row,
    wait_until_waiting,
)

FIRST = ["(1,10,n1)", "(2,20,n2)", "(3,30,n3)", "(4,40,n4)", "(5,50,n5)"]


def _started(conn: psycopg.Connection[Any]) -> Any:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    call(conn, "tx_savepoint", tx, "s")
    return tx


def _expired(conn: psycopg.Connection[Any]) -> Any:
    tx = _started(conn)
    expire(conn, tx)
    return tx


def _timed_out(conn: psycopg.Connection[Any]) -> Any:
    tx = _expired(conn)
    call(conn, "tx_reap")
    assert tx_row(conn, tx)[0] == "timed_out"
    return tx


def _committed(conn: psycopg.Connection[Any]) -> Any:
    tx = _started(conn)
    call(conn, "tx_commit", tx)
    return tx


def _rolled_back(conn: psycopg.Connection[Any]) -> Any:
    tx = _started(conn)
    call(conn, "tx_rollback", tx)
    return tx


def _failed(conn: psycopg.Connection[Any]) -> Any:
    tx = _expired(conn)
    conn.execute("set session_replication_role = replica")
    conn.execute("update items set v = 999 where id = 1")  # drift: the undo conflicts
    conn.execute("reset session_replication_role")
    call(conn, "tx_reap")
    assert tx_row(conn, tx)[0] == "failed"
    return tx


STATES: dict[str, tuple[Callable[[psycopg.Connection[Any]], Any], str]] = {
    "expired": (_expired, "RZ003"),
    "timed_out": (_timed_out, "RZ003"),
    "committed": (_committed, "RZ002"),
    "rolled_back": (_rolled_back, "RZ002"),
    "failed": (_failed, "RZ002"),
}


@pytest.mark.parametrize("state", list(STATES))
def test_calls_on_a_transaction_that_is_not_active_fail_with_its_states_sqlstate(
    conn: psycopg.Connection[Any], items: str, state: str
) -> None:
    make, expected = STATES[state]
    tx = make(conn)
    before = (rows_text(conn, items), tx_row(conn, tx)[0], audit_events(conn, tx))
    attempts = {
        "execute": ("tx_execute", tx, items, "update", {"v": 5}, {"id": 2}),
        "savepoint": ("tx_savepoint", tx, "t"),
        "rollback_to": ("tx_rollback_to", tx, "s"),
        "commit": ("tx_commit", tx),
    }
    got = {what: sqlstate_of(call, conn, *args) for what, args in attempts.items()}
    assert got == dict.fromkeys(attempts, expected)
    # None of them changed anything, nor wrote an audit row.
    assert (rows_text(conn, items), tx_row(conn, tx)[0], audit_events(conn, tx)) == before


@pytest.mark.parametrize("state", ["rolled_back", "timed_out"])
def test_rolling_back_a_finished_rollback_again_is_a_no_op(
    conn: psycopg.Connection[Any], items: str, state: str
) -> None:
    tx = STATES[state][0](conn)
    events = audit_events(conn, tx)
    again = call(conn, "tx_rollback", tx)
    assert (again["success"], again["status"], again["restored_rows"]) == (True, state, 0)
    assert audit_events(conn, tx) == events
    assert rows_text(conn, items) == FIRST


@pytest.mark.parametrize("state", ["committed", "failed"])
def test_rolling_back_a_committed_or_failed_transaction_is_rz002(
    conn: psycopg.Connection[Any], items: str, state: str
) -> None:
    tx = STATES[state][0](conn)
    assert sqlstate_of(call, conn, "tx_rollback", tx) == "RZ002"


def test_admin_retries_a_failed_transaction_with_force(
    conn: psycopg.Connection[Any], items: str
) -> None:
    tx = _failed(conn)
    assert claims_of(conn, tx) == 0  # released when it failed, images kept
    done = call(conn, "tx_rollback", tx, "retry", True)  # the superuser is admin
    assert (done["status"], done["restored_rows"], len(done["conflicts"])) == ("rolled_back", 1, 1)
    assert rows_text(conn, items) == FIRST
    assert audit_events(conn, tx)[-3:] == ["conflict", "conflict", "rollback"]


def test_owner_rolls_back_an_expired_transaction_not_yet_reaped(
    conn: psycopg.Connection[Any], items: str
) -> None:
    tx = _expired(conn)
    done = call(conn, "tx_rollback", tx, "late")
    assert (done["status"], done["restored_rows"]) == ("rolled_back", 1)
    assert rows_text(conn, items) == FIRST
    assert claims_of(conn, tx) == 0
    assert audit_events(conn, tx)[-1] == "rollback"
    assert call(conn, "tx_reap") == 0  # nothing left for the reaper


def test_another_users_calls_on_a_transaction_are_rz001_in_every_state(
    conn: psycopg.Connection[Any], items: str, make_role: Any
) -> None:
    stranger = psycopg.connect(make_role("b5_stranger", member_of=("resilience_user",)))
    stranger.autocommit = True
    with stranger:
        for make, _ in STATES.values():
            tx = make(conn)
            for args in (
                ("tx_execute", tx, items, "update", {"v": 5}, {"id": 2}),
                ("tx_savepoint", tx, "t"),
                ("tx_rollback_to", tx, "s"),
                ("tx_commit", tx),
                ("tx_rollback", tx),
                ("tx_status", tx),
            ):
                assert sqlstate_of(call, stranger, *args) == "RZ001", (make.__name__, args[0])


def test_commit_racing_a_rollback_in_progress_loses_with_rz002(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, items, "update", {"v": 1}, {"id": 1})
    call(conn, "tx_execute", tx, items, "update", {"v": 2}, {"id": 2})
    results: dict[str, Any] = {}
    with gate_closed(dsn) as keeper, psycopg.connect(dsn, autocommit=True) as other:
        with psycopg.connect(dsn, autocommit=True) as rolling:
            pid = backend_pid(rolling)
            rollback = threading.Thread(
                target=lambda: results.setdefault("rollback", call(rolling, "tx_rollback", tx))
            )
            rollback.start()
            wait_until_waiting(keeper, pid)  # inside the undo, row 2 restored first
            # Nobody else's write waits on it: row 1 is still claimed.
            assert sqlstate_of(other.execute, "update items set v = 0 where id = 1") == "55P03"
            # Another reaper skips it rather than waiting.
            assert call(other, "tx_reap") == 0
            commit_pid = backend_pid(other)
            commit = threading.Thread(
                target=lambda: results.setdefault(
                    "commit", sqlstate_of(call, other, "tx_commit", tx)
                )
            )
            commit.start()
            wait_until_waiting(keeper, commit_pid)
            keeper.execute("select pg_advisory_unlock_all()")
            rollback.join(60)
            commit.join(60)
    assert results["rollback"]["status"] == "rolled_back"
    assert results["commit"] == "RZ002"
    assert rows_text(conn, items) == FIRST
    assert audit_events(conn, tx) == ["begin", "execute", "execute", "rollback"]


@pytest.mark.parametrize("racer", ["tx_commit", "tx_execute", "tx_savepoint", "tx_rollback"])
def test_calls_racing_a_reap_in_progress_see_its_outcome(
    conn: psycopg.Connection[Any], dsn: str, items: str, racer: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, items, "update", {"v": 1}, {"id": 1})
    call(conn, "tx_execute", tx, items, "update", {"v": 2}, {"id": 2})
    expire(conn, tx)
    args = {
        "tx_commit": (tx,),
        "tx_execute": (tx, items, "update", {"v": 3}, {"id": 3}),
        "tx_savepoint": (tx, "late"),
        "tx_rollback": (tx,),
    }[racer]
    results: dict[str, Any] = {}
    with gate_closed(dsn) as keeper:
        with (
            psycopg.connect(dsn, autocommit=True) as reaper,
            psycopg.connect(dsn, autocommit=True) as owner,
        ):
            reaper_pid, owner_pid = backend_pid(reaper), backend_pid(owner)
            reaping = threading.Thread(
                target=lambda: results.setdefault("reaped", call(reaper, "tx_reap"))
            )
            reaping.start()
            wait_until_waiting(keeper, reaper_pid)  # inside the undo
            racing = threading.Thread(
                target=lambda: results.setdefault("racer", sqlstate_of(call, owner, racer, *args))
            )
            racing.start()
            wait_until_waiting(keeper, owner_pid)  # waits for the reap's outcome
            keeper.execute("select pg_advisory_unlock_all()")
            reaping.join(60)
            racing.join(60)
    assert results["reaped"] == 1
    # A rollback of what the reaper rolled back is a no-op; the rest are RZ003.
    assert results["racer"] == (None if racer == "tx_rollback" else "RZ003")
    assert tx_row(conn, tx)[0] == "timed_out"
    assert rows_text(conn, items) == FIRST
    assert claims_of(conn, tx) == 0
    assert audit_events(conn, tx) == ["begin", "execute", "execute", "timeout"]
