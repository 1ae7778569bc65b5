"""Circuit breakers sharing state through a database that hangs (docs/breakers.md
"Shared state", "Database away or hung": every round trip is bounded by
``request_timeout``; a hung database is treated like one that is down; a
breaker never makes the app wait because of the database)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgresilience import CircuitBreaker
from pgresilience.breakers.shared import SharedCircuitStore
from pgresilience.breakers.state import CircuitState

Conn = psycopg.Connection[Any]


def _fail() -> None:
    raise ConnectionError("503")


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pgresilience-circuits")]


@pytest.fixture
def frozen(conn: Conn) -> Iterator[list[int]]:
    """Pids to SIGSTOP; every one is resumed (SIGCONT) at the end, whatever happens."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it may have ended since
                os.kill(pid, signal.SIGCONT)


def store_backend(conn: Conn, owner: str) -> int:
    row = conn.execute(
        "select pid from pg_stat_activity where application_name = %s", (owner,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(60)
def test_close_while_the_database_hangs_is_bounded(conn: Conn, dsn: str, frozen: list[int]) -> None:
    """An app shutting down while the store's backend is frozen (SIGSTOP) and
    a transition is on its way: close() returns and the store's threads end,
    within about request_timeout; nothing is left blocked on the socket."""
    name = "pgr-close-hang"
    before = set(store_threads())
    store = SharedCircuitStore(f"{dsn} application_name={name}", request_timeout=1.0)
    breaker = store.attach(CircuitBreaker("svc", failure_threshold=1, timeout=30.0))
    assert store.wait_connected(10)
    assert store.flush()
    frozen.append(store_backend(conn, name))
    os.kill(frozen[0], signal.SIGSTOP)
    try:
        breaker.execute(_fail)
    except ConnectionError:
        pass
    assert breaker.state is CircuitState.OPEN  # decided locally, no wait
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(8)  # close() itself gives its threads 10 s each
    assert not closer.is_alive()
    leftover = [t for t in store_threads() if t not in before and t.is_alive()]
    assert leftover == []


@pytest.mark.timeout(60)
def test_many_threads_on_one_breaker_while_the_database_hangs(
    conn: Conn, dsn: str, frozen: list[int]
) -> None:
    """32 threads call one shared breaker through a trip, the open time and
    the probe while its store's backend is frozen: every call ends (no hang),
    the breaker trips and recovers locally, and health() says the store is
    unavailable."""
    name = "pgr-threads-hang"
    # No reconnection during the test: a new backend would answer at once.
    store = SharedCircuitStore(
        f"{dsn} application_name={name}", request_timeout=1.0, retry_interval=60.0
    )
    breaker = store.attach(CircuitBreaker("svc", failure_threshold=3, timeout=0.5))
    try:
        assert store.wait_connected(10)
        assert store.flush()
        frozen.append(store_backend(conn, name))
        os.kill(frozen[0], signal.SIGSTOP)
        healthy = threading.Event()
        ended: list[int] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            for n in range(40):
                try:
                    if healthy.is_set():
                        breaker.execute(lambda: None)
                    else:
                        breaker.execute(_fail)
                except Exception:
                    pass
                if n == 10:
                    healthy.set()
                threading.Event().wait(0.02)
            with lock:
                ended.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert len(ended) == 32
        # A closed circuit again; probe questions were decided locally.
        for _ in range(50):
            if breaker.state is CircuitState.CLOSED:
                break
            try:
                breaker.execute(lambda: None)  # a trial, decided locally
            except Exception:
                threading.Event().wait(0.1)  # still open
        assert breaker.state is CircuitState.CLOSED
        for _ in range(100):  # the watchdog cuts the hung round trip
            if not store.available:
                break
            threading.Event().wait(0.05)
        assert breaker.health()["shared_store"] == "unavailable"
    finally:
        store.close()  # bounded even while frozen; the fixture resumes the backend


@pytest.mark.timeout(60)
def test_a_transition_made_while_the_store_is_cut_off_is_published_on_reconnect(
    conn: Conn, dsn: str
) -> None:
    """The store's backend is terminated and its reconnections refused for a
    while (connection limit 0 on a dedicated role): a trip made meanwhile is
    decided locally at once, health() says the store is unavailable, and the
    trip reaches the shared row once the database takes connections again."""
    role = f"pgr_b3_store_{os.getpid()}"
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("create role {} login").format(ident))
    conn.execute(sql.SQL("grant resilience_user to {}").format(ident))
    store = SharedCircuitStore(
        f"{dsn} user={role} application_name={role}", request_timeout=1.0, retry_interval=0.3
    )
    breaker = store.attach(CircuitBreaker("svc-away", failure_threshold=1, timeout=30.0))
    try:
        assert store.wait_connected(10)
        assert store.flush()
        conn.execute(f'alter role "{role}" connection limit 0')
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (role,)
        )
        for _ in range(100):
            if not store.available:
                break
            threading.Event().wait(0.05)
        assert not store.available
        try:
            breaker.execute(_fail)
        except ConnectionError:
            pass
        assert breaker.state is CircuitState.OPEN
        assert breaker.health()["shared_store"] == "unavailable"
        shared = "select state from resilience.circuits where name = 'svc-away'"
        assert conn.execute(shared).fetchall() == []
        conn.execute(sql.SQL("alter role {} connection limit -1").format(ident))
        assert store.wait_connected(10)
        assert store.flush()
        assert conn.execute(shared).fetchall() == [("open",)]
    finally:
        store.close()
        conn.execute(sql.SQL("drop owned by {}").format(ident))
        conn.execute(sql.SQL("drop role {}").format(ident))
