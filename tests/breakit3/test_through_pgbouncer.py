"""Through PgBouncer in transaction mode, with the documented client
settings (README "Which URL for what": TransactionManager and
AsyncTransactionManager work through a transaction pooler; the shared circuit
store notices it and polls). Every call may land on another backend."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from security.sessions import Session

from pgresilience import (
    AsyncTransactionManager,
    CircuitBreaker,
    CircuitOpenError,
    ClaimConflict,
    SchemaVersionManager,
    TransactionExpired,
    TransactionManager,
)
from pgresilience.breakers.shared import SharedCircuitStore
from pgresilience.breakers.state import CircuitState

from .conftest import Bouncer
from .test_client_in_apps import _sync_transfers, _transfer_pairs, balances, claims_left, statuses

Conn = psycopg.Connection[Any]


@pytest.mark.timeout(60)
def test_threads_share_a_manager_through_the_pooler(
    accounts: Conn, dsn: str, bouncer: Bouncer
) -> None:
    """12 threads, a manager pool of 8 client connections, 4 server
    connections behind them: begin, lock, update and commit of one logical
    transaction run on whichever backend is free."""
    workers, rounds = 12, 4
    with TransactionManager(bouncer.dsn(dsn), pool_size=8) as tm:
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(_sync_transfers, tm, pair, rounds) for pair in _transfer_pairs(workers)
            ]
            for future in futures:
                future.result(timeout=18)
    assert sum(balances(accounts, *range(1, 61))) == 6000
    assert balances(accounts, 23, 24) == [100 - rounds, 100 + rounds]
    assert statuses(accounts) == {"committed": workers * rounds}
    assert claims_left(accounts) == 0
    prepared = accounts.execute("select count(*) from pg_prepared_statements").fetchone()
    assert prepared == (0,)


@pytest.mark.timeout(60)
def test_claims_and_expiry_across_backends(accounts: Conn, dsn: str, bouncer: Bouncer) -> None:
    """A claim taken through one client connection is seen through another
    (55P03 at once, no wait); an expired transaction is TransactionExpired
    whatever backend serves the call; a plain write through the pooler after
    tx_pre_request (its db-pre-request place) gets the expired holder's row."""
    pooled = bouncer.dsn(dsn)

    async def main() -> None:
        async with (
            AsyncTransactionManager(pooled, pool_size=2) as one,
            AsyncTransactionManager(pooled, pool_size=2) as two,
        ):
            tx = await one.begin(timeout=2.0)
            assert (await one.execute(tx, "accounts", "lock", match={"id": 5})).success
            blocked = await two.execute(
                await two.begin(), "accounts", "update", {"balance": 0}, {"id": 5}
            )
            assert isinstance(blocked.error, ClaimConflict)
            await asyncio.sleep(2.3)
            late = await two.execute(tx, "accounts", "update", {"balance": 0}, {"id": 5})
            assert isinstance(late.error, TransactionExpired)

    asyncio.run(main())
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as plain:
        with plain.transaction():
            plain.execute("select resilience.tx_pre_request()")
            plain.execute("update accounts set balance = 1 where id = 5")
    assert balances(accounts, 5) == [1]


@pytest.mark.timeout(60)
def test_header_mode_through_the_pooler(accounts: Conn, dsn: str, bouncer: Bouncer) -> None:
    """PostgREST's way: one database transaction setting request.headers
    (x-resilience-tx) locally, then a plain write; through the pooler it is
    captured and claimed, and tx_rollback from another connection undoes it."""
    pooled = bouncer.dsn(dsn)
    with TransactionManager(pooled) as tm:
        tx = tm.begin()
        headers = json.dumps({"x-resilience-tx": tx})
        with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as request:
            with request.transaction():
                request.execute("select set_config('request.headers', %s, true)", (headers,))
                request.execute("select resilience.tx_pre_request()")
                request.execute("update accounts set balance = 0 where id = 6")
            # the next statement (maybe on the same backend) is outside it
            with pytest.raises(psycopg.errors.LockNotAvailable):
                request.execute("update accounts set balance = 9 where id = 6")
        assert tm.status(tx)["claims"] == 1
        assert tm.rollback(tx)["restored_rows"] == 1
    assert balances(accounts, 6) == [100]


def _tripped(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        try:
            breaker.execute(_fail)
        except ConnectionError:
            pass


def _fail() -> None:
    raise ConnectionError("503")


@pytest.mark.timeout(60)
def test_shared_breakers_through_the_pooler(conn: Conn, dsn: str, bouncer: Bouncer) -> None:
    """Two stores (two processes' worth) through the pooler: both notice it
    (poll mode), a trip in one reaches the other by its refresh, and at probe
    time, with 8 threads calling in each, exactly one call in all is the
    trial, each process asking the database at most once."""
    pooled = bouncer.dsn(dsn)
    stores = [
        SharedCircuitStore(pooled, owner=f"p{i}", refresh_interval=0.2, probe_lease=15.0)
        for i in range(2)
    ]
    breakers = [CircuitBreaker("ai", failure_threshold=2, timeout=1.0) for _ in stores]
    try:
        for store, breaker in zip(stores, breakers, strict=True):
            store.attach(breaker)
            assert store.wait_connected(10)
            assert store.mode == "poll"
        _tripped(breakers[0])
        assert stores[0].flush()
        seen = threading.Event()
        for _ in range(100):
            if breakers[1].state is CircuitState.OPEN:
                seen.set()
                break
            threading.Event().wait(0.05)
        assert seen.is_set()
        threading.Event().wait(1.2)  # both local open times are over
        admitted: list[int] = []
        rejected = threading.Semaphore(0)
        barrier = threading.Barrier(16)

        def service(i: int) -> None:
            admitted.append(i)
            # The trial lasts until every other caller has been turned away,
            # so that none of them can come after the circuit closed.
            deadline = time.monotonic() + 5
            for _ in range(16 - len(admitted)):
                rejected.acquire(timeout=max(0.0, deadline - time.monotonic()))

        def trial(i: int) -> None:
            barrier.wait()
            try:
                breakers[i % 2].execute(service, i)
            except CircuitOpenError:
                rejected.release()

        threads = [threading.Thread(target=trial, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        # 8 threads per process: one trial call in all, one question per process at most.
        assert len(admitted) == 1
        assert all(s.probe_questions <= 1 for s in stores)
    finally:
        for store in stores:
            store.close()
    [(state,)] = conn.execute("select state from resilience.circuits where name = 'ai'").fetchall()
    assert state == "closed"


@pytest.mark.timeout(60)
def test_the_apps_own_connection_through_the_pooler(
    accounts: Conn, dsn: str, bouncer: Bouncer
) -> None:
    """The app's own connection with psycopg's defaults (statements prepared
    from the 5th execution) through the pooler: 30 calls on it never leave a
    prepared statement on a backend that another client would then collide
    with."""
    pooled = bouncer.dsn(dsn)
    with psycopg.connect(pooled, autocommit=True) as mine:
        tm = TransactionManager(mine)
        for n in range(10):
            tx = tm.begin()
            assert tm.execute(tx, "accounts", "update", {"balance": n}, {"id": 7}).success
            tm.commit(tx)
    assert balances(accounts, 7) == [9]
    prepared = accounts.execute("select count(*) from pg_prepared_statements").fetchone()
    assert prepared == (0,)


@pytest.mark.timeout(60)
def test_schema_listener_through_the_pooler(conn: Conn, dsn: str, bouncer: Bouncer) -> None:
    """README "Which URL for what": given a transaction pooler, the schema
    manager notices and polls; a migration committed directly reaches the
    callback."""
    seen: list[int] = []
    arrived = threading.Event()

    def on_change(changes: Any) -> None:
        seen.append(changes.version)
        arrived.set()

    svm = SchemaVersionManager(bouncer.dsn(dsn), poll_interval=0.2)
    try:
        start = svm.initialize().version
        svm.on_schema_change(on_change)
        assert svm.wait_listening(10)
        assert svm.mode == "poll"
        conn.execute("create table via_pooler (id int primary key)")
        conn.execute("select resilience.schema_refresh()")
        assert arrived.wait(10)
    finally:
        svm.close()
    assert seen and seen[0] > start


@pytest.mark.timeout(60)
def test_postgrest_requests_through_the_pooler(accounts: Conn, dsn: str, bouncer: Bouncer) -> None:
    """Supabase's path: PostgREST requests (set local role, JWT claims and
    headers in one database transaction each) through the transaction pooler,
    every request on whichever backend. Alice begins, her header-mode write is
    captured and claimed, Bob's request with her header is RZ001 and his
    plain write of her row 55P03, and her rollback restores the row."""
    accounts.execute("grant usage on schema public to authenticated")
    accounts.execute("grant all on accounts to authenticated")
    pooled = bouncer.dsn(dsn)
    with (
        psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as first,
        psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as second,
    ):
        alice = Session(first, "authenticated", "alice")
        tx = str(alice.rpc("tx_begin"))
        in_tx = Session(second, "authenticated", "alice", headers={"x-resilience-tx": tx})
        in_tx.query("select resilience.tx_pre_request()")
        in_tx.query("update accounts set balance = 0 where id = 8")
        bob_in_tx = Session(first, "authenticated", "bob", headers={"x-resilience-tx": tx})
        with pytest.raises(psycopg.Error) as foreign:
            bob_in_tx.query("update accounts set balance = 1 where id = 9")
        assert foreign.value.sqlstate == "RZ001"
        bob = Session(second, "authenticated", "bob")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            bob.query("update accounts set balance = 1 where id = 8")
        assert alice.rpc("tx_status", tx_id=tx)["claims"] == 1
        assert alice.rpc("tx_rollback", tx_id=tx)["restored_rows"] == 1
    assert balances(accounts, 8, 9) == [100, 100]


@pytest.mark.timeout(60)
def test_backends_killed_between_calls_behind_the_pooler(
    accounts: Conn, dsn: str, bouncer: Bouncer
) -> None:
    """Every server connection of the pooler is terminated between two calls
    of one logical transaction (a failover, pg_terminate_backend): the pooler
    replaces them, the next calls go through, and the commit keeps the write."""
    with TransactionManager(bouncer.dsn(dsn), pool_size=2) as tm:
        tx = tm.begin()
        assert tm.execute(tx, "accounts", "update", {"balance": 3}, {"id": 10}).success
        killed = accounts.execute(
            "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and backend_type = 'client backend'"
        ).fetchone()
        assert killed is not None and killed[0] >= 1
        threading.Event().wait(0.3)  # the pooler reads the servers' goodbyes
        assert tm.execute(tx, "accounts", "update", {"balance": 4}, {"id": 11}).success
        assert tm.commit(tx)["status"] == "committed"
    assert balances(accounts, 10, 11) == [3, 4]
