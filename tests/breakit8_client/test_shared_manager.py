"""One manager shared by a whole app: many threads, many asyncio tasks, each
with its own logical transaction (README: "share one manager between all
threads or tasks"), and tasks cancelled mid-call."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import psycopg
import pytest

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    TransactionManager,
)


def balances(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("select id, balance from accounts").fetchall())


def active_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select count(*) from resilience.transactions where status = 'active'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def holding(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """Active transactions that wrote something (and so hold claims)."""
    return conn.execute(
        "select t.label, count(*)::int from resilience.transactions as t"
        " join resilience.tx_statements as s on s.tx_id = t.id"
        " where t.status = 'active' group by t.label"
    ).fetchall()


def statements_by_label(conn: psycopg.Connection[Any]) -> dict[str, set[int]]:
    """Which rows each labelled transaction's journal says it wrote (the
    statement rows carry the table and count; the audit rows the detail)."""
    rows = conn.execute(
        "select t.label, count(s.*) from resilience.transactions as t"
        " left join resilience.tx_statements as s on s.tx_id = t.id group by t.label"
    ).fetchall()
    return {label: count for label, count in rows}


def test_threads_share_one_sync_manager(accounts: psycopg.Connection[Any], dsn: str) -> None:
    """16 threads, one manager with a pool of 4: each thread's transaction
    writes only its own row; those whose body raises leave nothing behind."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker(tm: TransactionManager, i: int) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                try:
                    with tm.transaction(label=f"t{i}.{round_}") as tx:
                        tx.update("accounts", {"balance": i * 10 + round_}, match={"id": i})
                        tx.update("accounts", {"owner": f"thread {i}"}, match={"id": i})
                        if i % 3 == 0:
                            raise ValueError("the body fails")
                except ValueError:
                    pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    with TransactionManager(dsn, pool_size=4) as tm:
        threads = [threading.Thread(target=worker, args=(tm, i)) for i in range(1, 17)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    expected = {i: (100 if i % 3 == 0 else i * 10 + 2) for i in range(1, 17)}
    got = balances(accounts)
    assert {i: got[i] for i in expected} == expected
    assert all(got[i] == 100 for i in range(17, 41))
    assert active_count(accounts) == 0
    # each transaction journaled its own two statements, no more, no less
    counts = statements_by_label(accounts)
    assert set(counts) == {f"t{i}.{r}" for i in range(1, 17) for r in range(3)}
    assert set(counts.values()) == {2}


def test_tasks_share_one_async_manager(accounts: psycopg.Connection[Any], dsn: str) -> None:
    """40 tasks on a pool of 3, interleaving at every await; half of them
    meet another task's claim and must see ClaimConflict, never wait."""

    async def main() -> list[Any]:
        async with AsyncTransactionManager(dsn, pool_size=3) as tm:

            async def task(i: int) -> str:
                row = (i % 20) + 1
                try:
                    async with tm.transaction(label=f"a{i}") as tx:
                        await tx.update("accounts", {"balance": i}, match={"id": row})
                        await asyncio.sleep(0.05)
                        await tx.update("accounts", {"owner": f"task {i}"}, match={"id": row})
                    return "committed"
                except ClaimConflict as exc:
                    assert exc.sqlstate == "55P03"
                    return "conflict"

            return await asyncio.gather(*(task(i) for i in range(40)))

    outcomes = asyncio.run(main())
    assert active_count(accounts) == 0
    owners = dict(accounts.execute("select id, owner from accounts").fetchall())
    got = balances(accounts)
    committed = [i for i, o in enumerate(outcomes) if o == "committed"]
    assert committed, outcomes
    for i in committed:  # a committed task's row holds that task's two writes, together
        row = (i % 20) + 1
        if owners[row] == f"task {i}":
            assert got[row] == i
    for row in range(1, 21):  # every row written ends with one task's pair of writes
        assert owners[row].startswith("task ")
        assert got[row] == int(owners[row].split()[1])


def test_random_cancellations_leave_no_transaction_behind(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """asyncio.wait_for timeouts hitting tasks anywhere inside
    ``async with tm.transaction()``: a cancelled task's writes are gone, a
    finished one's kept, and no logical transaction stays active (holding
    claims for its whole timeout)."""
    rnd = random.Random(8)
    timeouts = [rnd.uniform(0.0, 0.08) for _ in range(30)]

    async def main() -> list[str]:
        async with AsyncTransactionManager(dsn, pool_size=4) as tm:

            async def body(i: int) -> None:
                async with tm.transaction(label=f"c{i}") as tx:
                    await tx.update("accounts", {"balance": 1000 + i}, match={"id": i + 1})
                    await tx.update("accounts", {"owner": f"c{i}"}, match={"id": i + 1})

            async def task(i: int) -> str:
                try:
                    await asyncio.wait_for(body(i), timeouts[i])
                    return "done"
                except TimeoutError:
                    return "cancelled"

            outcomes = await asyncio.gather(*(task(i) for i in range(30)))
            # the manager still works after all that
            async with tm.transaction() as tx:
                await tx.update("accounts", {"balance": 7}, match={"id": 40})
            return outcomes

    outcomes = asyncio.run(main())
    got = balances(accounts)
    owners = dict(accounts.execute("select id, owner from accounts").fetchall())
    for i, outcome in enumerate(outcomes):
        if outcome == "done":
            assert (got[i + 1], owners[i + 1]) == (1000 + i, f"c{i}")
    assert got[40] == 7
    # A begin() cancelled while its database transaction commits leaves a
    # transaction that wrote nothing and holds no claim (it expires; see
    # test_begin_cancelled_at_its_commit); none that wrote may stay active.
    assert holding(accounts) == []
    for i in range(30):  # all or nothing per transaction
        assert (got[i + 1] == 1000 + i) == (owners[i + 1] == f"c{i}")


def test_one_user_connection_shared_by_tasks(accounts: psycopg.Connection[Any], dsn: str) -> None:
    """The app's own AsyncConnection given to the manager: 20 tasks take turns
    on it, each result is its own call's (a task never reads another's)."""

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as own:
            tm = AsyncTransactionManager(own)

            async def task(i: int) -> None:
                tx = await tm.begin(label=f"u{i}")
                result = await tm.execute(tx, "accounts", "update", {"balance": i}, {"id": i})
                assert result.success and result.data[0]["id"] == i
                status = await tm.status(tx)
                assert status["label"] == f"u{i}"
                await tm.commit(tx)

            await asyncio.gather(*(task(i) for i in range(1, 21)))

    asyncio.run(main())
    got = balances(accounts)
    assert all(got[i] == i for i in range(1, 21))


def _threads(count: int, target: Any) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, count + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.parametrize("source", ["connection", "pool"])
def test_threads_share_the_apps_connection_or_pool(
    accounts: psycopg.Connection[Any], dsn: str, source: str
) -> None:
    """The app's own (non-autocommit, psycopg's default) connection or
    psycopg_pool pool, shared by 12 threads through one manager."""
    from psycopg_pool import ConnectionPool

    if source == "connection":
        given: Any = psycopg.connect(dsn)
    else:
        given = ConnectionPool(dsn, min_size=1, max_size=3, open=True)
    try:
        tm = TransactionManager(given)

        def work(i: int) -> None:
            with tm.transaction(label=f"{source}{i}") as tx:
                rows = tx.update("accounts", {"balance": i}, match={"id": i})
                assert [r["id"] for r in rows] == [i]
                assert tx.status()["label"] == f"{source}{i}"

        assert _threads(12, work) == []
    finally:
        given.close()
    got = balances(accounts)
    assert all(got[i] == i for i in range(1, 13))
    assert active_count(accounts) == 0


def test_the_apps_connection_inside_its_own_transaction_is_refused(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """README: a call while the app's connection is inside the app's own
    transaction is refused with InvalidOperation (its commit would vanish
    with the app's rollback); the app's transaction is left as it was."""
    from pgresilience import InvalidOperation

    with psycopg.connect(dsn) as own:
        own.execute("update accounts set owner = 'app' where id = 5")
        tm = TransactionManager(own)
        with pytest.raises(InvalidOperation):
            tm.begin()
        own.rollback()
        tx = tm.begin()
        tm.commit(tx)

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aown:
            await aown.execute("select 1")
            atm = AsyncTransactionManager(aown)
            with pytest.raises(InvalidOperation):
                await atm.begin()

    asyncio.run(main())
    assert active_count(accounts) == 0
    assert accounts.execute("select owner from accounts where id = 5").fetchone() == ("owner 5",)


def test_the_apps_own_writes_on_a_shared_connection_are_not_captured(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """After a call on the app's connection, the app's own plain writes on it
    belong to no logical transaction: the transaction's rollback leaves them."""
    with psycopg.connect(dsn, autocommit=True) as own:
        tm = TransactionManager(own)
        tx = tm.begin()
        tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 7}).unwrap()
        own.execute("update accounts set owner = 'plain' where id = 8")
        with own.transaction():
            own.execute("update accounts set owner = 'plain too' where id = 9")
        assert tm.rollback(tx)["status"] == "rolled_back"
    owners = dict(accounts.execute("select id, owner from accounts where id in (7, 8, 9)"))
    assert owners == {7: "owner 7", 8: "plain", 9: "plain too"}
    assert balances(accounts)[7] == 100
