"""Hypothesis (seeded, bounded): a logical transaction of random updates in
which one call meets a fault (its backend terminated, statement_timeout,
lock_timeout, all while stuck on a row lock), then commit or rollback. The
oracle is a model of the table: the failed call leaves nothing, every call
reported successful is kept by a commit, and a rollback restores all."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from pgresilience import ClaimConflict, DatabaseError, TransactionManager

from .conftest import ROWS, Holder, counters, make_counters, waiting_backend

FAULTS = {"terminate": "57P01", "statement_timeout": "57014", "lock_timeout": "55P03"}

CASES = st.tuples(
    st.lists(
        st.tuples(st.integers(1, ROWS), st.integers(1, 99)), min_size=1, max_size=5
    ),  # (row, value) updates
    st.integers(0, 4),  # the call that meets the fault (modulo the length)
    st.sampled_from(sorted(FAULTS)),
    st.booleans(),  # commit (True) or rollback
)


def _faulty_call(
    dsn: str, managers: dict[str, TransactionManager], tx: str, row: int, value: int, fault: str
) -> Any:
    holder = Holder(dsn, "select * from counters where id = %s for update", (row,))
    try:
        if fault != "terminate":
            return managers[fault].execute(tx, "counters", "update", {"n": value}, {"id": row})
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: box.update(
                r=managers["plain"].execute(tx, "counters", "update", {"n": value}, {"id": row})
            )
        )
        thread.start()
        pid = waiting_backend(dsn, "%tx_execute%")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("select pg_terminate_backend(%s)", (pid,))
        thread.join(10)
        return box["r"]
    finally:
        holder.release()


def test_a_fault_in_one_call_leaves_the_logical_transaction_whole(dsn: str) -> None:
    """The call that meets the fault reports it (`ExecuteResult.error` with
    the fault's SQLSTATE: 57P01 and 57014 as DatabaseError, a lock timeout's
    55P03 as ClaimConflict) and leaves nothing; status counts exactly the
    calls reported successful; commit keeps them, rollback undoes them all."""
    make_counters(dsn)
    managers = {
        "plain": TransactionManager(dsn, pool_size=2),
        "statement_timeout": TransactionManager(
            make_conninfo(dsn, options="-c statement_timeout=150"), pool_size=1
        ),
        "lock_timeout": TransactionManager(
            make_conninfo(dsn, options="-c lock_timeout=150"), pool_size=1
        ),
    }
    tm = managers["plain"]

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=CASES)
    def check(case: tuple[list[tuple[int, int]], int, str, bool]) -> None:
        updates, at, fault, commit = case
        at %= len(updates)
        before = counters(dsn)
        model = dict(before)
        tx = tm.begin(timeout=30)
        kept = 0
        for i, (row, value) in enumerate(updates):
            if i == at:
                result = _faulty_call(dsn, managers, tx, row, value, fault)
                assert not result.success
                expected = ClaimConflict if fault == "lock_timeout" else DatabaseError
                assert isinstance(result.error, expected)
                assert result.error.sqlstate == FAULTS[fault]
                continue
            assert tm.execute(tx, "counters", "update", {"n": value}, {"id": row}).success
            model[row] = value
            kept += 1
        status = tm.status(tx)
        assert (status["status"], status["operations"]) == ("active", kept)
        if commit:
            assert tm.commit(tx)["status"] == "committed"
            assert counters(dsn) == model
        else:
            assert tm.rollback(tx)["status"] == "rolled_back"
            assert counters(dsn) == before

    try:
        check()
    finally:
        for manager in managers.values():
            manager.close()
