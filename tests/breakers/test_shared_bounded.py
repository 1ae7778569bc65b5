"""The shared store against a hung database, a thundering herd at probe time,
and several processes: a breaker never makes callers wait on the database.

A hung database is simulated two ways: the store's own backend frozen with
SIGSTOP (it accepts bytes and never answers; neither a cancel request nor its
own statement_timeout can reach it), and the circuit's row locked by another
transaction. Durations are measured to tell "did not wait" from "waited
about request_timeout" with wide margins; they are not performance claims.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience.breakers import CircuitBreaker, CircuitOpenError, CircuitState, ManualClock
from pgresilience.breakers.shared import SharedCircuitStore

from .helpers import ok, trip
from .test_shared import eventually, publish

WORKER = Path(__file__).with_name("shared_worker.py")

#: Every store round trip is bounded by this; a caller that "did not wait"
#: took less than WAITED, one that waited took about REQUEST_TIMEOUT.
REQUEST_TIMEOUT = 1.5
WAITED = 0.5


def store_backend(conn: psycopg.Connection[Any]) -> int:
    """The pid of the (one) store connection's backend in this test's database."""
    rows = conn.execute(
        "select pid from pg_stat_activity"
        " where application_name = 'pgresilience-circuits' and datname = current_database()"
    ).fetchall()
    assert len(rows) == 1, rows
    pid: int = rows[0][0]
    return pid


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def timed_calls(breaker: CircuitBreaker, threads: int, calls: int) -> list[tuple[str, float]]:
    """``threads`` threads released together, each making ``calls`` calls:
    (outcome, seconds) of every call."""
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def caller() -> None:
        barrier.wait(30)
        for _ in range(calls):
            began = time.perf_counter()
            try:
                breaker.execute(ok)
                outcome = "ok"
            except CircuitOpenError:
                outcome = "rejected"
            took = time.perf_counter() - began
            with lock:
                results.append((outcome, took))

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(results) == threads * calls
    return results


def shared_breaker(
    stores: Callable[..., SharedCircuitStore],
) -> tuple[SharedCircuitStore, CircuitBreaker, ManualClock]:
    store = stores(request_timeout=REQUEST_TIMEOUT, retry_interval=0.5)
    clock = ManualClock()
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=10.0, clock=clock))
    assert store.wait_connected(10) and store.flush(10)
    return store, breaker, clock


def assert_one_waiter_at_most(results: list[tuple[str, float]]) -> None:
    waited = [took for _, took in results if took >= WAITED]
    assert len(waited) <= 1, waited
    assert max(took for _, took in results) < REQUEST_TIMEOUT + 1.0


def assert_shows_the_hang(store: SharedCircuitStore, breaker: CircuitBreaker) -> None:
    assert eventually(lambda: not store.available)
    health = breaker.health()
    assert health["shared_store"] == "unavailable"
    assert "shared state unavailable" in health["message"]


# -- 1. a hung database ---------------------------------------------------------------


def test_a_frozen_backend_stalls_no_closed_caller_and_at_most_one_prober(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store, breaker, clock = shared_breaker(stores)
    with frozen(store_backend(conn)):
        closed = timed_calls(breaker, threads=8, calls=50)
        assert {outcome for outcome, _ in closed} == {"ok"}
        assert max(took for _, took in closed) < WAITED

        began = time.perf_counter()
        trip(breaker, 1)  # the transition is queued; publishing it hangs
        assert time.perf_counter() - began < WAITED
        assert breaker.state is CircuitState.OPEN

        clock.advance(10)  # probe time: the probe question queues behind the hang
        at_probe = timed_calls(breaker, threads=8, calls=1)
        assert_one_waiter_at_most(at_probe)
        # No answer within request_timeout: decided locally, the trial ran.
        assert [outcome for outcome, _ in at_probe].count("ok") >= 1
        assert breaker.state is CircuitState.CLOSED
        assert_shows_the_hang(store, breaker)
    # Thawed: the store reconnects on its own.
    assert eventually(lambda: store.available, within=15)
    assert breaker.health()["shared_store"] == "available"


def test_a_locked_circuit_row_stalls_no_caller_beyond_one_prober(
    conn: psycopg.Connection[Any], dsn: str, stores: Callable[..., SharedCircuitStore]
) -> None:
    store, breaker, clock = shared_breaker(stores)
    trip(breaker, 1)
    assert store.flush(10)
    # The database would grant the probe at once, if it could take the row.
    conn.execute("update resilience.circuits set open_until = now() - interval '1 s'")
    with psycopg.connect(dsn) as locker:
        locker.execute("select 1 from resilience.circuits where name = 'ai' for update")
        try:
            clock.advance(10)
            at_probe = timed_calls(breaker, threads=8, calls=1)
            assert_one_waiter_at_most(at_probe)
            assert breaker.state is CircuitState.CLOSED  # decided locally
            # Closed again, its transition waiting on the lock: nobody waits.
            closed = timed_calls(breaker, threads=8, calls=50)
            assert max(took for _, took in closed) < WAITED
            # The database answers (lock_timeout, before the watchdog): the
            # store stays available for its other circuits, and this
            # circuit's transition waits for the lock, retried at each refresh.
            assert store.available
            assert not store.flush(10)
        finally:
            locker.rollback()
    assert eventually(lambda: store.flush(10), within=15)


class CountingExecutor(ThreadPoolExecutor):
    """A default executor that counts what is submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_async_callers_at_probe_time_with_a_frozen_backend_use_no_executor(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store, breaker, clock = shared_breaker(stores)
    trip(breaker, 1)
    assert store.flush(10)
    clock.advance(10)

    async def answer() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def one() -> tuple[str, float]:
        began = time.perf_counter()
        try:
            await breaker.execute_async(answer)
            outcome = "ok"
        except CircuitOpenError:
            outcome = "rejected"
        return outcome, time.perf_counter() - began

    async def herd() -> tuple[list[tuple[str, float]], float, int]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        began = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(30)))
        return list(results), time.perf_counter() - began, executor.submitted

    with frozen(store_backend(conn)):
        results, took, submitted = asyncio.run(herd())
        assert submitted == 0
        assert_one_waiter_at_most(results)
        # The 30 tasks together take one request_timeout at most, not 30.
        assert took < REQUEST_TIMEOUT + 1.0
        assert breaker.state is CircuitState.CLOSED
        assert_shows_the_hang(store, breaker)


def test_async_callers_at_probe_time_with_a_healthy_database_ask_once_without_executor(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store, breaker, clock = shared_breaker(stores)
    trip(breaker, 1)
    assert store.flush(10)
    conn.execute("update resilience.circuits set open_until = now() - interval '1 s'")
    clock.advance(10)

    async def answer() -> str:
        return "ok"

    async def one() -> str:
        try:
            return await breaker.execute_async(answer)
        except CircuitOpenError:
            return "rejected"

    async def herd() -> tuple[list[str], int, float]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        began = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(30)))
        return list(results), executor.submitted, time.perf_counter() - began

    results, submitted, took = asyncio.run(herd())
    assert submitted == 0
    assert took < WAITED  # the answer came back, no one sat out request_timeout
    assert results.count("ok") >= 1  # the one that asked was granted the probe
    assert store.probe_questions == 1
    assert breaker.state is CircuitState.CLOSED
    assert store.flush(10)
    (state,) = conn.execute("select state from resilience.circuits").fetchone() or ()
    assert state == "closed"


# -- 2. a herd at probe time, healthy database -------------------------------------------


@pytest.fixture
def row_updates(conn: psycopg.Connection[Any]) -> Callable[[], list[str]]:
    """The new state of every update of resilience.circuits from now on."""
    conn.execute(
        """
        create table public.circuit_updates (n bigserial primary key, state text);
        create function public.count_circuit_update() returns trigger
        language plpgsql as $$
        begin
            insert into public.circuit_updates (state) values (new.state);
            return new;
        end;
        $$;
        create trigger count_updates after update on resilience.circuits
        for each row execute function public.count_circuit_update();
        """
    )

    def states() -> list[str]:
        return [r[0] for r in conn.execute("select state from public.circuit_updates order by n")]

    return states


def test_a_herd_at_probe_time_asks_once_writes_once_and_is_rejected_fast(
    conn: psycopg.Connection[Any],
    dsn: str,
    stores: Callable[..., SharedCircuitStore],
    row_updates: Callable[[], list[str]],
) -> None:
    store = stores(probe_lease=30.0)
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=0.5))
    assert store.wait_connected(10) and store.flush(10)
    trip(breaker, 1)
    assert store.flush(10)
    # The database's deadline passes before this process's: one question is enough.
    conn.execute("update resilience.circuits set open_until = now() - interval '1 s'")
    before = len(row_updates())
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_circuits")
        results: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(32)

        def caller() -> None:
            barrier.wait(30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    breaker.execute(ok)
                    return
                except CircuitOpenError:
                    with lock:
                        results.append(time.perf_counter() - began)
                time.sleep(0.001)

        threads = [threading.Thread(target=caller) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert breaker.state is CircuitState.CLOSED
        assert store.flush(10)
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]
    assert store.probe_questions == 1
    # One half-open episode: the grant and its outcome, one NOTIFY (the outcome).
    assert row_updates()[before:] == ["half_open", "closed"]
    assert [n["state"] for n in notices] == ["closed"]
    # Rejected callers did not wait for the database (generous bound: the
    # database round trip they used to wait for takes milliseconds).
    assert results and statistics.median(results) < 0.005


def start_workers(mode: str, dsn: str, count: int, *args: str) -> list[subprocess.Popen[str]]:
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, dsn, "ai", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return workers


def tell(worker: subprocess.Popen[str], line: str = "go") -> None:
    assert worker.stdin is not None
    worker.stdin.write(line + "\n")
    worker.stdin.flush()


def stop(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)


def test_herds_in_several_processes_make_one_probe_and_one_question_each(
    conn: psycopg.Connection[Any], dsn: str, row_updates: Callable[[], list[str]]
) -> None:
    workers = start_workers("herd", dsn, 3, "32")
    try:
        publish(conn, "ai", "open", 1.0)  # every worker adopts it through NOTIFY
        before = len(row_updates())
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute("listen resilience_circuits")
            for worker in workers:
                tell(worker)
            reports = [json.loads(w.communicate(timeout=90)[0]) for w in workers]
            notices = [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]
    finally:
        stop(workers)
    assert [r["admitted"] for r in reports] == [32, 32, 32]
    assert all(r["questions"] <= 1 for r in reports), reports
    assert sum(r["questions"] for r in reports) >= 1
    # Across all processes: one grant, one outcome, one NOTIFY.
    assert row_updates()[before:] == ["half_open", "closed"]
    assert [n["state"] for n in notices] == ["closed"]
    assert all(r["reject_median_us"] < 5000 for r in reports), reports


# -- 3. after a failed probe elsewhere ---------------------------------------------------


def test_after_a_failed_probe_elsewhere_a_process_is_admitted_after_timeout_not_the_lease(
    dsn: str, stores: Callable[..., SharedCircuitStore]
) -> None:
    (prober,) = start_workers("fail-probe", dsn, 1)
    try:
        # Lease 30 s, open time 1 s (the worker's too).
        store = stores(probe_lease=30.0, refresh_interval=0.2)
        breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=1.0))
        assert store.wait_connected(10) and store.flush(10)
        trip(breaker, 1)
        assert store.flush(10)
        tell(prober)  # it calls until admitted: its trial then waits for us
        assert prober.stdout is not None and prober.stdout.readline().strip() == "trial"
        # The other process holds the probe: this one is refused and told
        # to wait for the lease.
        assert eventually(lambda: breaker.retry_after is not None and breaker.retry_after > 0)
        time.sleep(1.1)  # past this process's own open time
        with pytest.raises(CircuitOpenError) as info:
            breaker.execute(ok)
        assert info.value.retry_after is not None and info.value.retry_after > 20
        tell(prober)  # the trial fails: open again for 1 s
        assert prober.stdout.readline().strip() == "failed"
        failed_at = time.monotonic()

        def admitted() -> bool:
            try:
                breaker.execute(ok)
            except CircuitOpenError:
                return False
            return True

        assert eventually(admitted, within=20)
        # Well before the 30 s lease would have ended.
        assert time.monotonic() - failed_at < 10
    finally:
        stop([prober])


def test_the_store_connection_carries_its_bounds_and_keeps_the_callers_own() -> None:
    store = SharedCircuitStore(
        "host=db.invalid dbname=app options='-c search_path=app' keepalives_idle=30",
        request_timeout=1.5,
        connect_timeout=0.5,
    )
    params = store._connect_params()
    assert params["options"] == "-c search_path=app -c statement_timeout=1500 -c lock_timeout=750"
    assert params["keepalives"] == 1 and params["keepalives_idle"] == "30"  # the caller's
    assert params["connect_timeout"] == 2  # libpq's minimum
    assert params["autocommit"] is True
