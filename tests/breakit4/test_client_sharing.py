"""The Python client shared the way the README says to share it: one
TransactionManager for many threads, one AsyncTransactionManager for many
asyncio tasks, and ``with tm.transaction()`` whose body raises."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, ClaimConflict, TransactionManager

from .conftest import rows_text

WORKERS = 6
ROUNDS = 5


@pytest.fixture
def ledger(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("""
        create table ledger (worker int, round int, v text not null, primary key (worker, round));
        create table shared (id int primary key, hits int not null);
        insert into shared values (1, 0);
        select resilience.manage_table('ledger');
        select resilience.manage_table('shared');
    """)
    return conn


def _expected() -> list[str]:
    """Rounds with an even number commit, odd ones raise inside the body."""
    return [f"({w},{r},w{w}r{r})" for w in range(WORKERS) for r in range(ROUNDS) if r % 2 == 0]


class Planned(Exception):
    """The body's own failure: it must come out of ``with`` unchanged."""


def test_one_manager_shared_by_threads(ledger: psycopg.Connection[Any], dsn: str) -> None:
    errors: list[BaseException] = []
    with TransactionManager(dsn, pool_size=3) as tm:

        def work(worker: int) -> None:
            try:
                for r in range(ROUNDS):
                    try:
                        with tm.transaction(timeout=30.0) as tx:
                            tx.insert("ledger", {"worker": worker, "round": r, "v": "tmp"})
                            tx.update(
                                "ledger", {"v": f"w{worker}r{r}"}, {"worker": worker, "round": r}
                            )
                            if r % 2:
                                raise Planned(worker, r)
                    except Planned as planned:
                        assert planned.args == (worker, r)
            except BaseException as exc:  # reported to the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tm.active_transactions() == []
    assert errors == []
    assert rows_text(ledger, "ledger", "worker, round") == _expected()


def test_one_async_manager_shared_by_tasks(ledger: psycopg.Connection[Any], dsn: str) -> None:
    async def main() -> None:
        async with AsyncTransactionManager(dsn, pool_size=3) as tm:

            async def work(worker: int) -> None:
                for r in range(ROUNDS):
                    try:
                        async with tm.transaction(timeout=30.0) as tx:
                            await tx.insert("ledger", {"worker": worker, "round": r, "v": "tmp"})
                            await tx.update(
                                "ledger", {"v": f"w{worker}r{r}"}, {"worker": worker, "round": r}
                            )
                            if r % 2:
                                raise Planned(worker, r)
                    except Planned as planned:
                        assert planned.args == (worker, r)

            await asyncio.gather(*(work(w) for w in range(WORKERS)))
            assert await tm.active_transactions() == []

    asyncio.run(main())
    assert rows_text(ledger, "ledger", "worker, round") == _expected()


def test_body_raising_after_a_claim_conflict_rolls_back_and_keeps_the_error(
    ledger: psycopg.Connection[Any], dsn: str
) -> None:
    """A body that meets another transaction's claim: the ClaimConflict comes
    out of ``with`` (not a rollback error), the body's earlier writes are
    undone, and the holder is untouched."""
    with TransactionManager(dsn) as tm:
        holder = tm.begin()
        tm.execute(holder, "shared", "update", {"hits": 1}, match={"id": 1}).unwrap()
        with pytest.raises(ClaimConflict) as caught:
            with tm.transaction() as tx:
                tx.insert("ledger", {"worker": 99, "round": 0, "v": "x"})
                tx.update("shared", {"hits": 2}, {"id": 1})
        assert caught.value.sqlstate == "55P03"
        assert not getattr(caught.value, "__notes__", None)  # the rollback went through
        assert rows_text(ledger, "ledger", "worker, round") == []
        assert tm.status(holder)["status"] == "active"
        tm.commit(holder)
    assert rows_text(ledger, "shared", "id") == ["(1,1)"]


def test_body_raising_when_the_rollback_itself_conflicts(
    ledger: psycopg.Connection[Any], dsn: str
) -> None:
    """The body's exception is what comes out of ``with``, even when the
    rollback on the way out fails (RZ005): the failure is attached as a note,
    the transaction stays active (nothing restored) for a forced retry."""
    ledger.execute("create unique index ledger_v on ledger (v)")
    with TransactionManager(dsn) as tm:
        with pytest.raises(Planned) as caught:
            with tm.transaction() as tx:
                tx.insert("ledger", {"worker": 1, "round": 1, "v": "a"})
                tx.update("ledger", {"v": "b"}, {"worker": 1, "round": 1})
                ledger.execute("insert into ledger values (2, 2, 'a')")  # takes 'a'
                raise Planned
        assert len(getattr(caught.value, "__notes__", [])) == 1  # the rollback's failure
        active = tm.active_transactions()
        assert len(active) == 1
        assert tm.rollback(active[0]["id"], force=True)["success"] is True
    assert rows_text(ledger, "ledger", "worker, round") == ["(2,2,a)"]
