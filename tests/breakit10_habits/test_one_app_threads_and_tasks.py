"""A web app's habit: a sync TransactionManager shared by the worker threads
and an AsyncTransactionManager shared by the event loop's tasks, both busy
at the same moment on the same tables. Every thread and task writes its own
rows, commits or rolls back, meets errors (its own duplicate key, an unknown
table, another's claim, a second commit, a batch failing at its second
operation) and must see the documented class with its SQLSTATE; nobody
hangs, nobody sees another's rows, and nothing is left active."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    DatabaseError,
    TransactionManager,
    TransactionNotActive,
    UnknownObject,
)

THREADS, TASKS, ROUNDS = 8, 20, 6


def _batch(owner: str) -> list[dict[str, Any]]:
    first = {"table": "items", "operation": "insert", "data": {"owner": owner, "k": 1000}}
    again = {
        "table": "items",
        "operation": "insert",
        "data": {"owner": owner, "k": {"$ref": "0.k"}},
    }
    return [first, again]


def _thread_work(tm: TransactionManager, owner: str) -> set[int]:
    kept = set()
    for i in range(ROUNDS):
        tx = tm.begin(timeout=60)
        wrote = tm.execute(tx, "items", "insert", {"owner": owner, "k": i})
        assert wrote.success and wrote.data[0]["owner"] == owner and wrote.data[0]["k"] == i
        dup = tm.execute(tx, "items", "insert", {"owner": owner, "k": i})
        assert isinstance(dup.error, DatabaseError) and dup.error.sqlstate == "23505"
        unknown = tm.execute(tx, "no_such_table", "insert", {"x": 1})
        assert isinstance(unknown.error, UnknownObject) and unknown.error.sqlstate == "42P01"
        hot = tm.execute(tx, "hot", "update", {"v": i}, match={"id": 1})
        assert hot.success or (
            isinstance(hot.error, ClaimConflict) and hot.error.sqlstate == "55P03"
        )
        if i % 2:
            tm.commit(tx)
            kept.add(i)
        else:
            tm.rollback(tx)
        with pytest.raises(TransactionNotActive) as again:
            tm.commit(tx)
        assert again.value.sqlstate == "RZ002"
    batch = tm.run(_batch(owner))
    assert not batch.success and batch.error is not None
    assert batch.error.sqlstate == "23505" and batch.error.detail["index"] == 1
    return kept


async def _task_work(atm: AsyncTransactionManager, owner: str) -> set[int]:
    kept = set()
    for i in range(ROUNDS):
        tx = await atm.begin(timeout=60)
        wrote = await atm.execute(tx, "items", "insert", {"owner": owner, "k": i})
        assert wrote.success and wrote.data[0]["owner"] == owner and wrote.data[0]["k"] == i
        hot = await atm.execute(tx, "hot", "update", {"v": i}, match={"id": 1})
        assert hot.success or isinstance(hot.error, ClaimConflict)
        if i % 2:
            await atm.commit(tx)
            kept.add(i)
        else:
            await atm.rollback(tx)
    async with atm.transaction() as tx_block:
        await tx_block.insert("items", {"owner": owner, "k": 500})
    kept.add(500)
    with pytest.raises(DatabaseError) as dup:
        async with atm.transaction() as tx_block:
            await tx_block.insert("items", {"owner": owner, "k": 501})
            await tx_block.insert("items", {"owner": owner, "k": 501})
    assert dup.value.sqlstate == "23505"  # and the block's first 501 is rolled back
    batch = await atm.run(_batch(owner))
    assert batch.error is not None and batch.error.detail["index"] == 1
    return kept


@pytest.mark.timeout(120)
def test_threads_and_tasks_share_the_managers_at_once(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "create table items (id bigint generated always as identity primary key,"
        " owner text not null, k int not null, unique (owner, k));"
        " create table hot (id int primary key, v int); insert into hot values (1, 0);"
        " select resilience.manage_table('items'); select resilience.manage_table('hot');"
    )
    kept: dict[str, set[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)  # THREADS - 1 threads and the loop

    def thread_main(tm: TransactionManager, owner: str) -> None:
        try:
            start.wait(30)
            kept[owner] = _thread_work(tm, owner)
        except BaseException as exc:
            failures.append(exc)

    def loop_main() -> None:
        async def main() -> None:
            async with AsyncTransactionManager(dsn, pool_size=4) as atm:
                owners = [f"task{i}" for i in range(TASKS)]
                start.wait(30)
                done = await asyncio.wait_for(
                    asyncio.gather(*(_task_work(atm, o) for o in owners)), 90
                )
                kept.update(zip(owners, done, strict=True))

        try:
            asyncio.run(main())
        except BaseException as exc:
            failures.append(exc)

    with TransactionManager(dsn, pool_size=4) as tm:
        workers = [
            threading.Thread(target=thread_main, args=(tm, f"thread{i}"), daemon=True)
            for i in range(THREADS - 1)
        ]
        workers.append(threading.Thread(target=loop_main, daemon=True))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(100)
            assert not worker.is_alive(), "a thread or the event loop hung"
    assert not failures, failures
    assert len(kept) == THREADS - 1 + TASKS
    rows: dict[str, set[int]] = {}
    for owner, k in conn.execute("select owner, k from items").fetchall():
        rows.setdefault(owner, set()).add(k)
    assert rows == {owner: ks for owner, ks in kept.items() if ks}
    active = "select count(*) from resilience.transactions where status = 'active'"
    assert conn.execute(active).fetchone() == (0,)


@pytest.mark.timeout(60)
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limitation: one AsyncTransactionManager's pool and lock belong to one "
    "event loop; loops running at once in threads get RuntimeError or wait forever "
    "(docs/transactions.md, known limitations)",
)
def test_one_async_manager_shared_by_event_loops_running_at_once(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """A user with a global AsyncTransactionManager called from threads that
    each run their own loop (asgiref's async_to_sync does) would see calls
    fail with "bound to a different event loop" or hang."""
    conn.execute("create table marks (id bigint generated always as identity primary key, v int)")
    conn.execute("select resilience.manage_table('marks')")
    outcome: dict[str, Any] = {}

    with_loops = AsyncTransactionManager(dsn, pool_size=1)

    def loop_thread(name: str) -> None:
        async def calls() -> None:
            for i in range(10):
                tx = await with_loops.begin()
                assert (await with_loops.execute(tx, "marks", "insert", {"v": i})).success
                await with_loops.rollback(tx)

        try:
            asyncio.run(asyncio.wait_for(calls(), 3))
            outcome[name] = "ok"
        except BaseException as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(target=loop_thread, args=(f"loop{i}",), daemon=True) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert outcome == {f"loop{i}": "ok" for i in range(3)}, outcome
