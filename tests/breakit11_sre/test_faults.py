"""Faults under a live manager: the client's backend terminated mid-call,
a call stuck behind a row lock, statement_timeout and lock_timeout, an
asyncio deadline. The oracle is the table: it holds exactly what the calls
that succeeded say, and a logical transaction is all or nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    DatabaseError,
    TransactionManager,
)

from .conftest import Holder, counters, make_counters, waiting_backend


def _terminate(admin_dsn: str, pid: int) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        assert c.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_execute_whose_backend_is_terminated_reports_57p01_and_keeps_the_tx(
    dsn: str, holders: list[Holder]
) -> None:
    """An execute stuck behind a row lock whose backend an admin terminates
    returns at once with the connection's SQLSTATE (57P01, DatabaseError);
    its statement is not in the logical transaction (status counts one
    statement), the transaction stays active and rolls back exactly, and the
    same manager goes on serving calls."""
    make_counters(dsn)
    with TransactionManager(dsn, pool_size=2) as tm:
        tx = tm.begin(timeout=10)
        assert tm.execute(tx, "counters", "update", {"n": 1}, match={"id": 1}).success
        holders.append(Holder(dsn, "select * from counters where id = 2 for update"))
        thread, box = _in_thread(
            lambda: tm.execute(tx, "counters", "update", {"n": 2}, match={"id": 2})
        )
        _terminate(dsn, waiting_backend(dsn, "%tx_execute%"))
        thread.join(5)
        result = box["value"]
        assert not result.success
        assert isinstance(result.error, DatabaseError) and result.error.sqlstate == "57P01"
        holders[0].release()
        status = tm.status(tx)
        assert (status["status"], status["operations"]) == ("active", 1)
        tm.rollback(tx)
        assert counters(dsn) == {1: 0, 2: 0, 3: 0, 4: 0}
        with tm.transaction(timeout=5) as again:
            again.update("counters", {"n": 5}, match={"id": 2})
    assert counters(dsn)[2] == 5


def test_commit_whose_backend_is_terminated_is_rolled_back_by_transaction(
    dsn: str, holders: list[Holder]
) -> None:
    """`transaction()`'s commit stuck (another session holds the
    transaction's row) and its backend terminated: the block raises the
    connection's error and the logical transaction is rolled back, not left
    holding its claims; status resolves the outcome: rolled_back."""
    make_counters(dsn)
    with TransactionManager(dsn, pool_size=2) as tm:
        seen: dict[str, str] = {}

        def block() -> None:
            with tm.transaction(timeout=10) as tx:
                seen["tx"] = tx.id
                tx.update("counters", {"n": 7}, match={"id": 3})
                holders.append(
                    Holder(
                        dsn,
                        "select 1 from resilience.transactions where id = %s for share",
                        (tx.id,),
                    )
                )

        thread, box = _in_thread(block)
        pid = waiting_backend(dsn, "%tx_commit%")
        _terminate(dsn, pid)
        waiting_backend(dsn, "%tx_rollback%")  # transaction() rolls back ...
        holders[0].release()  # ... once the row is free
        thread.join(5)
        assert isinstance(box["error"], DatabaseError) and box["error"].sqlstate == "57P01"
        assert tm.status(seen["tx"])["status"] == "rolled_back"
    assert counters(dsn)[3] == 0


@pytest.mark.parametrize(
    ("setting", "sqlstate"), [("statement_timeout", "57014"), ("lock_timeout", "55P03")]
)
def test_commit_cut_by_a_server_timeout_is_rolled_back_by_transaction(
    dsn: str, holders: list[Holder], setting: str, sqlstate: str
) -> None:
    """A commit the server cancels (statement_timeout 57014, lock_timeout
    55P03) did not happen: its database transaction rolled back, the logical
    one is still active with its claims. `transaction()` rolls it back as it
    does a commit cut by a lost connection, rather than leave the rows
    claimed until the transaction expires (it used to: only 08/57P counted)."""
    make_counters(dsn)
    timed = make_conninfo(dsn, options=f"-c {setting}=200")
    with TransactionManager(timed, pool_size=2) as tm:
        seen: dict[str, str] = {}

        def block() -> None:
            with tm.transaction(timeout=30) as tx:
                seen["tx"] = tx.id
                tx.update("counters", {"n": 9}, match={"id": 4})
                holders.append(
                    Holder(
                        dsn,
                        "select 1 from resilience.transactions where id = %s for share",
                        (tx.id,),
                    )
                )

        thread, box = _in_thread(block)
        waiting_backend(dsn, "%tx_commit%")
        try:
            waiting_backend(dsn, "%tx_rollback%", timeout=2)
        except AssertionError:
            pass  # no rollback came: the status below says so
        holders[0].release()
        thread.join(5)
        assert box["error"].sqlstate == sqlstate
        assert tm.status(seen["tx"])["status"] == "rolled_back"
        with tm.transaction(timeout=5) as other:  # the row is free at once
            other.update("counters", {"n": 1}, match={"id": 4})
    assert counters(dsn)[4] == 1


def test_lock_on_a_row_a_plain_transaction_holds_fails_at_once(
    dsn: str, holders: list[Holder]
) -> None:
    """`lock` is NOWAIT: a row held by a plain database transaction fails the
    call at once with 55P03 (ClaimConflict), even with no lock_timeout."""
    make_counters(dsn)
    holders.append(Holder(dsn, "select * from counters where id = 1 for update"))
    with TransactionManager(dsn, pool_size=1) as tm:
        tx = tm.begin(timeout=5)
        started = time.monotonic()
        result = tm.execute(tx, "counters", "lock", None, match={"id": 1})
        assert time.monotonic() - started < 1.0
        assert isinstance(result.error, ClaimConflict) and result.error.sqlstate == "55P03"
        assert tm.status(tx)["claims"] == 0
        tm.rollback(tx)


def test_async_deadline_on_a_stuck_execute_cancels_it_in_the_server(
    dsn: str, holders: list[Holder]
) -> None:
    """`asyncio.wait_for` around an execute stuck on a row lock: the task
    ends at the deadline, the statement is cancelled in the server (it holds
    no lock, journals nothing), and the manager's connection serves the next
    call. Several tasks share the manager meanwhile."""
    make_counters(dsn)
    holders.append(Holder(dsn, "select * from counters where id = 2 for update"))

    async def main() -> None:
        async with AsyncTransactionManager(dsn, pool_size=2) as tm:
            tx = await tm.begin(timeout=10)
            await tm.execute(tx, "counters", "update", {"n": 1}, match={"id": 1})
            stuck = tm.execute(tx, "counters", "update", {"n": 2}, match={"id": 2})
            others = [tm.status(tx) for _ in range(5)]
            done = await asyncio.gather(
                asyncio.wait_for(stuck, 0.3), *others, return_exceptions=True
            )
            assert isinstance(done[0], TimeoutError)
            assert all(isinstance(d, dict) for d in done[1:])
            with psycopg.connect(dsn, autocommit=True) as c:
                waiting = c.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                    " and query like '%tx_execute%'"
                ).fetchone()
            assert waiting == (0,)
            status = await tm.status(tx)
            assert (status["status"], status["operations"]) == ("active", 1)
            holders[0].release()
            await tm.rollback(tx)

    asyncio.run(main())
    assert counters(dsn) == {1: 0, 2: 0, 3: 0, 4: 0}


def test_async_deadline_on_a_frozen_backend_is_bounded(dsn: str) -> None:
    """A backend frozen (SIGSTOP) under an execute: `asyncio.wait_for`
    cannot end the call at its deadline (the cancel reaches no frozen
    backend), but psycopg gives up within 5 s more and closes the
    connection: the task ends, nothing of the call is kept once the backend
    resumes (its COMMIT was never sent), and the manager serves the next
    call on a new connection."""
    make_counters(dsn)
    stopped: list[int] = []

    async def main() -> float:
        async with AsyncTransactionManager(dsn, pool_size=1) as tm:
            tx = await tm.begin(timeout=30)
            with psycopg.connect(dsn, autocommit=True) as c:
                [(pid,)] = c.execute(
                    "select pid from pg_stat_activity where datname = current_database()"
                    " and backend_type = 'client backend' and pid <> pg_backend_pid()"
                ).fetchall()
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    tm.execute(tx, "counters", "update", {"n": 1}, match={"id": 1}), 0.2
                )
            took = time.monotonic() - started
            os.kill(pid, signal.SIGCONT)
            stopped.remove(pid)
            status = await tm.status(tx)
            assert (status["status"], status["operations"]) == ("active", 0)
            assert (await tm.rollback(tx))["status"] == "rolled_back"
            return took

    try:
        took = asyncio.run(main())
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert took < 0.2 + 5.0 + 1.0
    assert counters(dsn) == {1: 0, 2: 0, 3: 0, 4: 0}


@pytest.mark.parametrize("fault", ["terminate", "statement_timeout"])
def test_batch_cut_mid_way_keeps_nothing(dsn: str, holders: list[Holder], fault: str) -> None:
    """`run()` (tx_run) is one database transaction: cut in its second
    operation (stuck on a row lock) by a terminated backend or a
    statement_timeout, it reports the error (`success` False, the fault's
    SQLSTATE) and none of its operations is kept, the first included."""
    make_counters(dsn)
    conninfo = (
        dsn if fault == "terminate" else make_conninfo(dsn, options="-c statement_timeout=200")
    )
    holders.append(Holder(dsn, "select * from counters where id = 2 for update"))
    operations = [
        {"table": "counters", "operation": "update", "data": {"n": 1}, "match": {"id": 1}},
        {"table": "counters", "operation": "update", "data": {"n": 2}, "match": {"id": 2}},
    ]
    with TransactionManager(conninfo, pool_size=1) as tm:
        thread, box = _in_thread(lambda: tm.run(operations))
        if fault == "terminate":
            _terminate(dsn, waiting_backend(dsn, "%tx_run%"))
        thread.join(5)
        result = box["value"]
        assert not result.success
        expected = "57P01" if fault == "terminate" else "57014"
        assert result.error.sqlstate in (expected, None)
        holders[0].release()
        assert counters(dsn) == {1: 0, 2: 0, 3: 0, 4: 0}
        assert tm.run(operations).success  # the manager goes on
    assert counters(dsn) == {1: 1, 2: 2, 3: 0, 4: 0}
