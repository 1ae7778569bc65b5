"""The Python client as applications use it: one manager shared by a whole
app (threads, asyncio tasks, a psycopg_pool pool, one connection), the
``transaction()`` block committing on exit and rolling back on any exception
(KeyboardInterrupt and cancellation included), and backends killed mid-call.

Promises attacked: README "From Python (psycopg)" (a manager takes a
conninfo, a connection or a pool; threads and tasks share it; one database
transaction per call), DESIGN.md "Python client" (``with tm.transaction()``
commits on exit, rolls back on exception), docs/errors.md (errors are classes
mapped from SQLSTATEs; every exception derives from PgResilienceError)."""

from __future__ import annotations

import asyncio
import math
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    DatabaseError,
    InvalidOperation,
    PgResilienceError,
    TransactionExpired,
    TransactionManager,
    TransactionNotActive,
)

Conn = psycopg.Connection[Any]


def balances(conn: Conn, *ids: int) -> list[int]:
    rows = conn.execute(
        "select balance from accounts where id = any(%s) order by id", (list(ids),)
    ).fetchall()
    return [r[0] for r in rows]


def statuses(conn: Conn) -> dict[str, int]:
    rows = conn.execute(
        "select status, count(*) from resilience.transactions group by status"
    ).fetchall()
    return dict(rows)


def claims_left(conn: Conn) -> int:
    row = conn.execute(
        "select count(*) from resilience.transactions as t"
        " where resilience._tx_claim_count(t.id) > 0"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def row_lock(dsn: str) -> Iterator[Conn]:
    """A plain database transaction holding the row lock of account 2, so a
    call writing that row blocks in the server until we act."""
    holder = psycopg.connect(dsn)
    holder.execute("update accounts set balance = balance where id = 2")
    try:
        yield holder
    finally:
        holder.rollback()
        holder.close()


def when_a_call_waits(dsn: str, act: Any, *args: Any) -> None:
    """``act(*args)`` once a backend of this database waits for a lock (the
    call we mean to interrupt is then in the server), or after 10 s."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        for _ in range(200):
            waiting = watcher.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            threading.Event().wait(0.05)
    act(*args)


def _transfer_pairs(workers: int) -> list[tuple[int, int]]:
    # Disjoint pairs: every logical transaction must commit, none may conflict.
    return [(2 * w + 1, 2 * w + 2) for w in range(workers)]


def _sync_transfers(tm: TransactionManager, pair: tuple[int, int], rounds: int) -> None:
    debit, credit = pair
    for _ in range(rounds):
        with tm.transaction(timeout=15.0) as tx:
            a = tx.lock("accounts", {"id": debit})[0]["balance"]
            b = tx.lock("accounts", {"id": credit})[0]["balance"]
            tx.update("accounts", {"balance": a - 1}, match={"id": debit})
            tx.update("accounts", {"balance": b + 1}, match={"id": credit})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["conninfo", "pool", "connection"])
def test_one_manager_shared_by_many_threads(accounts: Conn, dsn: str, source: str) -> None:
    """12 threads share one manager (over a conninfo with a pool of 3, a
    psycopg_pool pool the app opened with its default, non-autocommit
    connections, or one connection): every logical transaction commits, the
    money adds up, no claim is left."""
    workers, rounds = 12, 5
    given: Any
    if source == "conninfo":
        given = dsn
    elif source == "pool":
        given = ConnectionPool(dsn, min_size=1, max_size=3, open=True)
    else:
        given = psycopg.connect(dsn, autocommit=True)
    try:
        tm = TransactionManager(given, pool_size=3)
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(_sync_transfers, tm, pair, rounds) for pair in _transfer_pairs(workers)
            ]
            for future in futures:
                future.result(timeout=18)
        tm.close()
    finally:
        if not isinstance(given, str):
            given.close()
    assert balances(accounts, 1, 2) == [100 - rounds, 100 + rounds]
    assert sum(balances(accounts, *range(1, 61))) == 6000
    assert statuses(accounts) == {"committed": workers * rounds}
    assert claims_left(accounts) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["conninfo", "pool", "connection"])
def test_one_async_manager_shared_by_many_tasks(accounts: Conn, dsn: str, source: str) -> None:
    """The same with 24 asyncio tasks on one AsyncTransactionManager."""
    tasks_n, rounds = 24, 3

    async def transfers(tm: AsyncTransactionManager, pair: tuple[int, int]) -> None:
        debit, credit = pair
        for _ in range(rounds):
            async with tm.transaction(timeout=15.0) as tx:
                a = (await tx.lock("accounts", {"id": debit}))[0]["balance"]
                b = (await tx.lock("accounts", {"id": credit}))[0]["balance"]
                await tx.update("accounts", {"balance": a - 1}, match={"id": debit})
                await tx.update("accounts", {"balance": b + 1}, match={"id": credit})

    async def main() -> None:
        given: Any
        if source == "conninfo":
            given = dsn
        elif source == "pool":
            given = AsyncConnectionPool(dsn, min_size=1, max_size=3, open=False)
            await given.open()
        else:
            given = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            async with AsyncTransactionManager(given, pool_size=3) as tm:
                async with asyncio.timeout(18):
                    await asyncio.gather(*(transfers(tm, p) for p in _transfer_pairs(tasks_n)))
        finally:
            if not isinstance(given, str):
                await given.close()

    asyncio.run(main())
    assert sum(balances(accounts, *range(1, 61))) == 6000
    assert balances(accounts, 47, 48) == [100 - rounds, 100 + rounds]
    assert statuses(accounts) == {"committed": tasks_n * rounds}
    assert claims_left(accounts) == 0


class _Boom(Exception):
    pass


def _deep(tx: Any, depth: int) -> Iterator[int]:
    """An exception raised three frames down, inside a generator."""
    if depth == 0:
        tx.update("accounts", {"balance": 0}, match={"id": 4})
        raise _Boom("nested")
    yield from _deep(tx, depth - 1)
    yield depth


@pytest.mark.timeout(60)
def test_exception_from_nested_code_rolls_back_and_propagates_unchanged(
    accounts: Conn, dsn: str
) -> None:
    with TransactionManager(dsn) as tm:
        with pytest.raises(_Boom) as raised:
            with tm.transaction() as tx:
                tx.update("accounts", {"balance": 1}, match={"id": 3})
                list(_deep(tx, 3))
        status = tm.status(tx.id)
    assert type(raised.value) is _Boom  # not wrapped, not replaced
    assert status["status"] == "rolled_back"
    assert balances(accounts, 3, 4) == [100, 100]
    assert claims_left(accounts) == 0


# A hang here blocks in C while waiting on the server, where the default
# SIGALRM never reaches Python (seen once on PostgreSQL 14 under load):
# the thread method ends the run with every stack instead.
@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("source", ["conninfo", "connection"])
def test_keyboard_interrupt_while_a_call_waits_rolls_back(
    accounts: Conn, dsn: str, row_lock: Conn, source: str
) -> None:
    """Ctrl-C (a real SIGINT) while a call waits in the server for a row
    lock: KeyboardInterrupt propagates, the logical transaction is rolled back
    (its earlier write restored), and the manager's next call works, on the
    pool's one connection or on the app's own."""
    main = threading.get_ident()
    interrupter = threading.Thread(
        target=when_a_call_waits, args=(dsn, signal.pthread_kill, main, signal.SIGINT)
    )
    given: Any = dsn if source == "conninfo" else psycopg.connect(dsn, autocommit=True)
    with TransactionManager(given, pool_size=1) as tm:
        ids: list[str] = []
        interrupter.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                with tm.transaction() as tx:
                    ids.append(tx.id)
                    tx.update("accounts", {"balance": 1}, match={"id": 1})
                    tx.update("accounts", {"balance": 1}, match={"id": 2})  # blocks
        finally:
            interrupter.join(10)
        assert tm.status(ids[0])["status"] == "rolled_back"
        row_lock.rollback()
        with tm.transaction() as tx:  # the one connection still works
            tx.update("accounts", {"balance": 7}, match={"id": 2})
    if not isinstance(given, str):
        given.close()
    assert balances(accounts, 1, 2) == [100, 7]


# A hang here blocks in C while waiting on the server, where the default
# SIGALRM never reaches Python (seen once on PostgreSQL 14 under load):
# the thread method ends the run with every stack instead.
@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("source", ["conninfo", "connection"])
def test_async_cancellation_while_a_call_waits_rolls_back(
    accounts: Conn, dsn: str, row_lock: Conn, source: str
) -> None:
    """``asyncio.timeout`` cancels the task while a call waits in the server:
    TimeoutError for the caller, the logical transaction rolled back, no
    backend left waiting on the lock, and the manager still usable (its
    pool's one connection, or the app's own)."""

    async def main() -> tuple[str, str]:
        given: Any = dsn
        if source == "connection":
            given = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with AsyncTransactionManager(given, pool_size=1) as tm:
            ids: list[str] = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3.0):  # the blocked call waits till then
                    async with tm.transaction() as tx:
                        ids.append(tx.id)
                        await tx.update("accounts", {"balance": 1}, match={"id": 1})
                        await tx.update("accounts", {"balance": 1}, match={"id": 2})
            status = (await tm.status(ids[0]))["status"]
            waiting = accounts.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and wait_event_type = 'Lock'"
            ).fetchone()
            assert waiting == (0,)
            row_lock.rollback()
            later = await tm.begin()
            result = await tm.execute(later, "accounts", "update", {"balance": 8}, {"id": 2})
            await tm.commit(later)
            assert result.success
        if not isinstance(given, str):
            await given.close()
        return status, later

    status, _ = asyncio.run(main())
    assert status == "rolled_back"
    assert balances(accounts, 1, 2) == [100, 8]


# A hang here blocks in C while waiting on the server, where the default
# SIGALRM never reaches Python (seen once on PostgreSQL 14 under load):
# the thread method ends the run with every stack instead.
@pytest.mark.timeout(60, method="thread")
def test_backend_killed_mid_call(accounts: Conn, dsn: str, row_lock: Conn) -> None:
    """pg_terminate_backend on the backend running a call: the call reports
    DatabaseError with SQLSTATE 57P01 (no hang), the logical transaction is
    still active with its earlier write claimed, and the manager goes on."""
    tagged = f"{dsn} application_name=victim"
    with TransactionManager(tagged) as tm:
        tx = tm.begin()
        assert tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1}).success

        def kill() -> None:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where application_name = 'victim' and wait_event_type = 'Lock'"
                )

        killer = threading.Thread(target=when_a_call_waits, args=(dsn, kill))
        killer.start()
        result = tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 2})
        killer.join(10)
        assert not result.success
        assert isinstance(result.error, DatabaseError)
        assert result.error.sqlstate == "57P01"
        status = tm.status(tx)
        assert (status["status"], status["claims"]) == ("active", 1)
        with pytest.raises(ClaimConflict):
            with tm.transaction() as other:
                other.update("accounts", {"balance": 5}, match={"id": 1})
        row_lock.rollback()
        assert tm.rollback(tx)["status"] == "rolled_back"
    assert balances(accounts, 1, 2) == [100, 100]
    assert claims_left(accounts) == 0


@pytest.mark.timeout(60)
def test_a_connection_inside_the_apps_own_transaction_is_refused(accounts: Conn, dsn: str) -> None:
    """README: given your own psycopg connection, "calls take turns on it,
    one database transaction at a time". psycopg connections are not
    autocommit by default; one the app has used is inside a transaction.
    A call there would run in a savepoint of the app's transaction: commit
    would answer "committed" and the app's next rollback (or a close) would
    silently undo it. Refused instead, before anything is sent."""
    app = psycopg.connect(dsn)  # psycopg's default: not autocommit
    try:
        app.execute("select 1")  # the app's own work: a transaction is open
        tm = TransactionManager(app)
        with pytest.raises(InvalidOperation):
            tm.begin()
        app.commit()  # idle again: each call is its own database transaction
        tx = tm.begin()
        assert tm.execute(tx, "accounts", "update", {"balance": 3}, {"id": 1}).success
        assert tm.commit(tx)["status"] == "committed"
    finally:
        app.close()
    assert balances(accounts, 1) == [3]
    assert statuses(accounts) == {"committed": 1}


@pytest.mark.timeout(60)
def test_an_async_connection_inside_the_apps_own_transaction_is_refused(
    accounts: Conn, dsn: str
) -> None:
    """The same for AsyncTransactionManager, including a transaction that
    failed (INERROR): refused, nothing sent, nothing recorded."""

    async def main() -> None:
        app = await psycopg.AsyncConnection.connect(dsn)
        try:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await app.execute("select 1 / 0")  # the app's transaction failed
            tm = AsyncTransactionManager(app)
            with pytest.raises(InvalidOperation):
                await tm.begin()
            await app.rollback()
            tx = await tm.begin()
            assert (await tm.commit(tx))["status"] == "committed"
        finally:
            await app.close()

    asyncio.run(main())
    assert statuses(accounts) == {"committed": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [-5.0, 0.0, 1e12, math.nan, math.inf])
def test_a_bad_timeout_is_invalid_operation(accounts: Conn, dsn: str, timeout: float) -> None:
    """docs/errors.md: a bad timeout is 22023 (InvalidOperation), and every
    exception derives from PgResilienceError. A negative or zero timeout
    must not become a transaction that expires at once, nor a huge one a
    missing-function error, nor NaN a ValueError."""
    with TransactionManager(dsn) as tm:
        with pytest.raises(InvalidOperation) as raised:
            tm.begin(timeout=timeout)
    assert raised.value.sqlstate == "22023"
    assert isinstance(raised.value, PgResilienceError)
    assert statuses(accounts) == {}


@pytest.mark.timeout(60)
def test_a_block_that_outlives_its_timeout_raises_expired_and_is_reaped(
    accounts: Conn, dsn: str
) -> None:
    """The block ends after the transaction's timeout: the commit on exit
    raises TransactionExpired (RZ003), never commits; the transaction is then
    what DESIGN.md "Timeouts and cleanup" says: active and expired until a
    reap rolls it back (timed_out), writes undone, claims released."""
    with TransactionManager(dsn) as tm:
        with pytest.raises(TransactionExpired):
            with tm.transaction(timeout=1.0) as tx:
                tx.update("accounts", {"balance": 0}, match={"id": 1})
                threading.Event().wait(1.3)
        status = tm.status(tx.id)
        assert (status["status"], status["expired"]) == ("active", True)
        assert tm.reap() == 1
        assert tm.status(tx.id)["status"] == "timed_out"
    assert balances(accounts, 1) == [100]
    assert claims_left(accounts) == 0


@pytest.mark.timeout(60)
def test_a_generator_closed_inside_a_block_rolls_it_back(accounts: Conn, dsn: str) -> None:
    """A block inside a generator the caller abandons: GeneratorExit reaches
    the block, which rolls back (it is an exception, not a normal exit)."""
    with TransactionManager(dsn) as tm:
        ids: list[str] = []

        def writes() -> Iterator[int]:
            with tm.transaction() as tx:
                ids.append(tx.id)
                for n in (1, 2, 3):
                    tx.update("accounts", {"balance": 0}, match={"id": n})
                    yield n

        stream = writes()
        assert next(stream) == 1
        assert next(stream) == 2
        stream.close()
        assert tm.status(ids[0])["status"] == "rolled_back"
    assert balances(accounts, 1, 2, 3) == [100, 100, 100]


@pytest.mark.timeout(60)
def test_one_logical_transaction_written_by_many_tasks_at_once(accounts: Conn, dsn: str) -> None:
    """asyncio.gather of writes in ONE logical transaction (each call its own
    database transaction on its own connection): 10 concurrent updates of one
    row and 10 first writes of other rows of the table all succeed (its own
    claims never conflict with each other), and the block commits."""

    async def main() -> dict[str, Any]:
        async with AsyncTransactionManager(dsn, pool_size=10) as tm:
            async with tm.transaction() as tx:
                same = await asyncio.gather(
                    *(tx.update("accounts", {"balance": n}, {"id": 1}) for n in range(10))
                )
                assert all(len(rows) == 1 for rows in same)
                others = await asyncio.gather(
                    *(tx.update("accounts", {"balance": 0}, {"id": n}) for n in range(2, 12))
                )
                assert all(len(rows) == 1 for rows in others)
                status = await tx.status()
                assert status["claims"] == 11
                tx_id = tx.id
            return await tm.status(tx_id)

    status = asyncio.run(main())
    assert status["status"] == "committed"
    assert balances(accounts, *range(2, 12)) == [0] * 10


@pytest.mark.timeout(60)
def test_many_tasks_then_rollback_restores_everything(accounts: Conn, dsn: str) -> None:
    """The same concurrent writes, then tx_rollback: every row restored."""

    async def main() -> dict[str, Any]:
        async with AsyncTransactionManager(dsn, pool_size=10) as tm:
            tx = await tm.begin()
            results = await asyncio.gather(
                *(
                    tm.execute(tx, "accounts", "update", {"balance": n}, {"id": 1})
                    for n in range(10)
                ),
                *(
                    tm.execute(tx, "accounts", "update", {"balance": 0}, {"id": n})
                    for n in range(2, 12)
                ),
            )
            assert all(r.success for r in results)
            return await tm.rollback(tx)

    outcome = asyncio.run(main())
    assert (outcome["status"], outcome["restored_rows"]) == ("rolled_back", 20)
    assert balances(accounts, *range(1, 12)) == [100] * 11
    assert claims_left(accounts) == 0


@pytest.mark.timeout(60)
def test_a_lazy_reap_never_makes_an_unrelated_tx_begin_wait(accounts: Conn, dsn: str) -> None:
    """DESIGN.md "Claims": nobody waits; "Timeouts and cleanup": no call of one
    user (tx_begin, ...) ever fails because of another user's transaction. A
    transaction expires holding row 1; a report reads row 1 FOR SHARE in a
    long database transaction; another user's tx_begin must not wait on it:
    the lazy reap leaves that transaction active (expired) for a later reap.
    (Before the fix, the first tx_begin to reap waited as long as the report.)"""
    with TransactionManager(dsn) as tm:
        expired = tm.begin(timeout=1.0)
        assert tm.execute(expired, "accounts", "update", {"balance": 0}, {"id": 1}).success
        threading.Event().wait(1.3)
        report = psycopg.connect(dsn)
        begun: list[str] = []
        caller = threading.Thread(target=lambda: begun.append(tm.begin()), daemon=True)
        try:
            report.execute("select * from accounts where id = 1 for share")
            caller.start()
            caller.join(5)
            assert begun, "tx_begin waited on the report's row lock"
            left = tm.status(expired)
            assert (left["status"], left["expired"], left["claims"]) == ("active", True, 1)
            # Left for later: no lazy reap tries it again before reap_after
            # (each try would cost every caller the lock_timeout).
            reap_after = left["outcome"]["reap_after"]
            tm.rollback(tm.begin())
            assert tm.status(expired)["outcome"]["reap_after"] == reap_after
        finally:
            report.rollback()
            report.close()
            if caller.is_alive():
                caller.join(10)
        assert tm.reap() == 1  # the report is gone: the next reap restores
        assert tm.status(expired)["status"] == "timed_out"
    assert balances(accounts, 1) == [100]


def test_a_trigger_raising_55p03_is_a_failure_for_an_explicit_reap(
    accounts: Conn, dsn: str
) -> None:
    """Only a lazy reap (inside another user's call, under its short
    lock_timeout) leaves a transaction whose undo met 55P03 for later: an
    explicit tx_reap (pg_cron, the janitor) makes it `failed` like any other
    restore error, so a user trigger that raises 55P03 cannot keep it up for
    every lazy reap to retry."""
    accounts.execute(
        "create function refuse_restore() returns trigger language plpgsql as $$"
        " begin raise exception using errcode = '55P03', message = 'busy'; end $$"
    )
    with TransactionManager(dsn) as tm:
        expired = tm.begin(timeout=1.0)
        assert tm.execute(expired, "accounts", "update", {"balance": 0}, {"id": 1}).success
        accounts.execute(
            "create trigger refuse_restore before update on accounts"
            " for each row execute function refuse_restore()"
        )
        threading.Event().wait(1.3)
        tm.rollback(tm.begin())  # tx_begin reaps lazily: left for later
        assert tm.status(expired)["status"] == "active"
        assert tm.reap() == 1
        assert tm.status(expired)["status"] == "failed"
    assert claims_left(accounts) == 0


@pytest.mark.timeout(60)
def test_the_handle_after_its_block(accounts: Conn, dsn: str) -> None:
    """A handle kept past its block writes nothing more: after the commit and
    after a rollback alike its calls raise TransactionNotActive (RZ002)."""
    with TransactionManager(dsn) as tm:
        with tm.transaction() as committed:
            committed.update("accounts", {"balance": 1}, match={"id": 1})
        with pytest.raises(ValueError):
            with tm.transaction() as rolled_back:
                rolled_back.update("accounts", {"balance": 1}, match={"id": 2})
                raise ValueError("no")
        for handle in (committed, rolled_back):
            with pytest.raises(TransactionNotActive) as raised:
                handle.update("accounts", {"balance": 5}, match={"id": 3})
            assert raised.value.sqlstate == "RZ002"
    assert balances(accounts, 1, 2, 3) == [1, 100, 100]


@pytest.mark.timeout(60)
def test_pooled_connections_killed_while_idle(accounts: Conn, dsn: str) -> None:
    """Without a pooler in between, the manager's idle pooled connection is
    terminated between two calls (a failover, pg_terminate_backend): the
    next call finds it closed at BEGIN, before anything of the call was
    sent, and runs on a new connection; the logical transaction goes on.
    (Behind PgBouncer the pooler hides this: see test_through_pgbouncer.)"""
    with TransactionManager(f"{dsn} application_name=idle_victim", pool_size=1) as tm:
        tx = tm.begin()
        assert tm.execute(tx, "accounts", "update", {"balance": 3}, {"id": 1}).success
        accounts.execute(  # waits (up to 5 s) until the backend is gone
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
            " where application_name = 'idle_victim'"
        )
        assert tm.commit(tx)["status"] == "committed"
    assert balances(accounts, 1) == [3]


def test_every_connection_of_a_pool_killed_while_idle(accounts: Conn, dsn: str) -> None:
    """A restart closes every connection of the app's pool: the next call
    skips each closed one and runs on a new connection."""
    with ConnectionPool(
        f"{dsn} application_name=idle_pool",
        min_size=3,
        max_size=3,
        kwargs={"autocommit": True},
        open=True,
    ) as pool:
        pool.wait()
        with TransactionManager(pool) as tm:
            tx = tm.begin()
            accounts.execute(
                "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                " where application_name = 'idle_pool'"
            )
            assert tm.execute(tx, "accounts", "update", {"balance": 4}, {"id": 2}).success
            assert tm.commit(tx)["status"] == "committed"
    assert balances(accounts, 2) == [4]


def test_the_apps_own_connection_killed_is_reported_not_retried(accounts: Conn, dsn: str) -> None:
    """One connection the app passes in: nothing to retry on; the error is
    the documented DatabaseError, and the transaction is untouched."""
    with psycopg.connect(f"{dsn} application_name=own_victim", autocommit=True) as own:
        tm = TransactionManager(own)
        tx = tm.begin()
        accounts.execute(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
            " where application_name = 'own_victim'"
        )
        with pytest.raises(DatabaseError):
            tm.commit(tx)
    assert accounts.execute(
        "select status from resilience.transactions where id = %s", (tx,)
    ).fetchone() == ("active",)


def test_async_pooled_connection_killed_while_idle(accounts: Conn, dsn: str) -> None:
    """The async manager skips a connection the server closed the same way."""

    async def main() -> str:
        async with AsyncTransactionManager(f"{dsn} application_name=idle_async", pool_size=1) as tm:
            tx = await tm.begin()
            assert (await tm.execute(tx, "accounts", "update", {"balance": 5}, {"id": 3})).success
            await asyncio.to_thread(
                accounts.execute,
                "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                " where application_name = 'idle_async'",
            )
            return str((await tm.commit(tx))["status"])

    assert asyncio.run(main()) == "committed"
    assert balances(accounts, 3) == [5]
