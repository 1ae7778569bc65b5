"""Calls interrupted mid-way: asyncio cancellation (wait_for timeouts),
Ctrl-C in sync code, a backend SIGSTOPped, a row lock held by another
session. What becomes of the logical transaction, the connection and the
pool afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, TransactionManager

from .conftest import other_backends


def tx_row(conn: psycopg.Connection[Any], label: str) -> tuple[str, str]:
    row = conn.execute(
        "select id::text, status from resilience.transactions where label = %s", (label,)
    ).fetchone()
    assert row is not None, label
    return row[0], row[1]


def balance(conn: psycopg.Connection[Any], account: int) -> int:
    row = conn.execute("select balance from accounts where id = %s", (account,)).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def held(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> Iterator[None]:
    """Another session holds the locks ``statement`` takes until the block ends."""
    with psycopg.connect(dsn) as other:
        other.execute(statement, params)
        try:
            yield
        finally:
            other.rollback()


@contextmanager
def ctrl_c_after(seconds: float) -> Iterator[None]:
    """Press Ctrl-C (SIGINT to this process) after ``seconds``."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# -- the commit of transaction() interrupted ------------------------------------


def test_async_commit_cancelled_leaves_no_claims(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """``async with tm.transaction()`` whose commit a wait_for timeout cancels
    (tx_commit waits for the transaction's row, locked by someone else): the
    block exits with the cancellation, and the transaction must not stay
    active holding its claims until it expires; it is rolled back, as a
    block that ends with an exception is."""

    async def main() -> None:
        async with AsyncTransactionManager(dsn) as tm:

            async def block() -> None:
                async with tm.transaction(label="commit-cancelled") as tx:
                    await tx.update("accounts", {"balance": 1}, match={"id": 1})
                    lock.set()
                    await asyncio.sleep(0)

            lock = asyncio.Event()
            task = asyncio.ensure_future(asyncio.wait_for(block(), 1.0))
            await lock.wait()
            tx_id, _ = tx_row(accounts, "commit-cancelled")
            with psycopg.connect(dsn) as locker:
                locker.execute(
                    "select 1 from resilience.transactions where id = %s for update", (tx_id,)
                )
                # the lock goes a while after the cancellation (the rollback
                # that follows it waits for the same row)
                threading.Timer(1.5, locker.rollback).start()
                with pytest.raises(TimeoutError):
                    await task
            # a writer after the cancellation is not refused by a left-over claim
            async with tm.transaction() as other:
                await other.update("accounts", {"balance": 2}, match={"id": 1})

    asyncio.run(main())
    assert tx_row(accounts, "commit-cancelled")[1] == "rolled_back"
    assert balance(accounts, 1) == 2


def test_sync_commit_interrupted_by_ctrl_c_leaves_no_claims(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """The same in sync code: Ctrl-C while ``transaction()``'s commit waits."""
    with TransactionManager(dsn) as tm, psycopg.connect(dsn) as locker:
        with pytest.raises(KeyboardInterrupt):
            with tm.transaction(label="commit-interrupted") as tx:
                tx.update("accounts", {"balance": 1}, match={"id": 1})
                tx_id, _ = tx_row(accounts, "commit-interrupted")
                locker.execute(
                    "select 1 from resilience.transactions where id = %s for update", (tx_id,)
                )
                # Ctrl-C comes while the commit, on leaving the block, waits
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                threading.Timer(1.5, locker.rollback).start()
        with tm.transaction() as other:
            other.update("accounts", {"balance": 2}, match={"id": 1})
    assert tx_row(accounts, "commit-interrupted")[1] == "rolled_back"
    assert balance(accounts, 1) == 2


# -- the body interrupted -------------------------------------------------------


def test_base_exception_in_the_body_rolls_back(accounts: psycopg.Connection[Any], dsn: str) -> None:
    with TransactionManager(dsn) as tm:
        for error in (KeyboardInterrupt, SystemExit, GeneratorExit):
            label = error.__name__
            with pytest.raises(error):
                with tm.transaction(label=label) as tx:
                    tx.update("accounts", {"balance": 1}, match={"id": 1})
                    raise error()
            assert tx_row(accounts, label)[1] == "rolled_back"
            assert balance(accounts, 1) == 100


def test_ctrl_c_while_a_call_waits_on_a_row_lock(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """A plain session holds the row (SELECT ... FOR UPDATE): tx_execute waits
    for it, as any UPDATE does; Ctrl-C cancels the statement, the block rolls
    back what it wrote before, and the manager's pool still works."""
    with TransactionManager(dsn, pool_size=2) as tm:
        with held(dsn, "select 1 from accounts where id = 2 for update"):
            with pytest.raises(KeyboardInterrupt):
                with tm.transaction(label="ctrl-c") as tx:
                    tx.update("accounts", {"balance": 1}, match={"id": 1})
                    with ctrl_c_after(0.5):
                        tx.update("accounts", {"balance": 1}, match={"id": 2})
        with tm.transaction() as tx:
            tx.update("accounts", {"balance": 3}, match={"id": 2})
    assert tx_row(accounts, "ctrl-c")[1] == "rolled_back"
    assert (balance(accounts, 1), balance(accounts, 2)) == (100, 3)


def test_async_call_cancelled_on_a_row_lock_keeps_the_transaction(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """``tm.execute`` cancelled by wait_for while it waits on a plain row lock:
    nothing of that call is written, the transaction stays the caller's
    (active, its earlier write kept), and it can go on and commit."""

    async def main() -> None:
        async with AsyncTransactionManager(dsn, pool_size=1) as tm:
            tx = await tm.begin(label="waits")
            await tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1})
            with held(dsn, "select 1 from accounts where id = 2 for update"):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(
                        tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 2}), 0.5
                    )
            status = await tm.status(tx)
            assert status["status"] == "active"
            await tm.execute(tx, "accounts", "update", {"balance": 5}, {"id": 2})
            await tm.commit(tx)

    asyncio.run(main())
    assert (balance(accounts, 1), balance(accounts, 2)) == (1, 5)


def test_sigstopped_backend_and_wait_for(
    accounts: psycopg.Connection[Any], dsn: str, stopped: Callable[[list[int]], None]
) -> None:
    """The docs promise no timeout of their own for the transaction managers
    (a SIGSTOPped backend blocks a call as long as the app lets it): an
    asyncio.wait_for bounds it. The cancellation reaches a frozen backend,
    which cannot answer it; psycopg then gives up on that connection (after
    its own 5 s), the pool drops it, and once the backend runs again the
    manager and the transaction go on."""

    async def main() -> None:
        async with AsyncTransactionManager(dsn, pool_size=1) as tm:
            tx = await tm.begin(label="frozen")
            stopped(other_backends(accounts))
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1}), 0.5
                )
            assert time.monotonic() - started < 60  # bounded, not for ever
            for pid in other_backends(accounts):
                os.kill(pid, signal.SIGCONT)
            # the frozen session's statement never committed: the row is free
            result = await tm.execute(tx, "accounts", "update", {"balance": 7}, {"id": 1})
            assert result.success, result.error
            await tm.commit(tx)

    asyncio.run(main())
    assert balance(accounts, 1) == 7


def test_commit_whose_session_is_killed_rolls_back(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """pg_terminate_backend on the session of ``transaction()``'s commit: the
    commit's fate is unknown to the client (DatabaseError, connection lost),
    so the block rolls back on another connection rather than leaving the
    claims until the transaction expires."""
    from pgresilience import DatabaseError

    with TransactionManager(dsn, pool_size=2) as tm, psycopg.connect(dsn) as locker:
        with pytest.raises(DatabaseError):
            with tm.transaction(label="commit-killed") as tx:
                tx.update("accounts", {"balance": 1}, match={"id": 1})
                tx_id, _ = tx_row(accounts, "commit-killed")
                locker.execute(
                    "select 1 from resilience.transactions where id = %s for update", (tx_id,)
                )

                def kill_the_waiting_commit() -> None:
                    while True:
                        waiting = accounts.execute(
                            "select pid from pg_stat_activity where wait_event_type = 'Lock'"
                            " and datname = current_database()"
                        ).fetchall()
                        if waiting:
                            accounts.execute("select pg_terminate_backend(%s)", (waiting[0][0],))
                            locker.rollback()
                            return
                        time.sleep(0.05)

                threading.Thread(target=kill_the_waiting_commit, daemon=True).start()
        with tm.transaction() as other:
            other.update("accounts", {"balance": 2}, match={"id": 1})
    assert tx_row(accounts, "commit-killed")[1] == "rolled_back"
    assert balance(accounts, 1) == 2
