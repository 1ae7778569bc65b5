"""Trying to break the shared state of docs/breakers.md ("Shared state"):
other stores (each one stands for a process: its own connection, thread and
owner) see transitions within the bound, one probe question per breaker per
process, hostile names, concurrent writers, clock skew, and a database that
is frozen.

Waits are bounded polls for something to happen, never pass criteria.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pgresilience.breakers import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    ManualClock,
)
from pgresilience.breakers.shared import SharedCircuitStore

from .conftest import Boom, fail, ok

MakeStore = Callable[..., SharedCircuitStore]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Polls ``check`` until it holds or ``timeout`` passes."""
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if check():
            return True
        done.wait(0.02)
    return check()


def shared(store: SharedCircuitStore, name: str, **options: Any) -> CircuitBreaker:
    options.setdefault("failure_threshold", 1)
    breaker = CircuitBreaker(name, **options)
    store.attach(breaker)
    return breaker


def trip(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        breaker.execute(fail)
    assert breaker.state is CircuitState.OPEN


def row(conn: psycopg.Connection[Any], name: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "select state, version, probe_owner from resilience.circuits where name = %s", (name,)
    ).fetchone()


HOSTILE = [
    "it's",
    'a "quoted" name',
    "semi; drop table resilience.circuits; --",
    "%I %L %s $1 $$",
    "ünïcödé 🔥 名前",
    "\\ back\\slash",
    "x" * 200,
    "🔥" * 200,
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_shared_exactly(
    stores: MakeStore, conn: psycopg.Connection[Any], name: str
) -> None:
    a, b = stores(), stores()
    here = shared(a, name, timeout=60)
    there = shared(b, name, timeout=60)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(here)
    assert eventually(lambda: there.state is CircuitState.OPEN)
    assert a.flush()
    found = row(conn, name)
    assert found is not None and found[0] == "open"
    health = conn.execute("select resilience.circuit_health()").fetchall()
    assert [h[0]["name"] for h in health] == [name]


@pytest.mark.parametrize("name", ["", "x" * 201, "nul\x00byte"], ids=["empty", "201", "nul"])
def test_a_name_the_table_refuses_is_refused_at_attach(
    stores: MakeStore, conn: psycopg.Connection[Any], name: str
) -> None:
    """resilience.circuits holds names of 1 to 200 characters, and text
    cannot hold NUL. Such a breaker used to be attached; a NUL in its name
    then failed every refresh of the store (the other breakers' too) and
    killed the store's thread at its next connection. Now attach says so
    at once, and the store goes on sharing its other breakers."""
    a, b = stores(refresh_interval=0.2), stores()
    good_here = shared(a, "good", timeout=60)
    with pytest.raises(ValueError):
        a.attach(CircuitBreaker(name))
    registry = CircuitBreakerRegistry(shared_store=a)
    with pytest.raises(ValueError):
        registry.get_breaker(name, shared=True)
    assert name not in registry
    assert registry.get_breaker(name).execute(ok) == "ok"  # a local one is fine
    good_there = shared(b, "good", timeout=60)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(good_here)
    assert eventually(lambda: good_there.state is CircuitState.OPEN)
    conn.execute(
        "update resilience.circuits set state = 'closed', open_until = null,"
        " version = version + 1 where name = 'good'"
    )  # a NOTIFY-less change
    assert eventually(lambda: good_here.state is CircuitState.CLOSED)


def test_a_store_without_privileges_keeps_its_thread_and_recovers(
    stores: MakeStore, make_role: Callable[..., str], conn: psycopg.Connection[Any]
) -> None:
    """A role that may not call the _circuit_* functions: every round trip
    fails with 42501. The breaker works locally, and once the role gets
    resilience_user the store shares again (its I/O thread survived)."""
    role_dsn = make_role("breakbrk_nobody")
    store = stores(role_dsn, retry_interval=0.2, refresh_interval=0.2)
    breaker = shared(store, "svc", timeout=60)
    store.wait_connected(5)
    trip(breaker)
    assert breaker.execute(ok, fallback=lambda: "cached") == "cached"
    store.flush(2)
    assert row(conn, "svc") is None
    conn.execute("grant resilience_user to breakbrk_nobody")
    try:
        breaker.reset()
        trip(breaker)
        assert eventually(lambda: (row(conn, "svc") or ("",))[0] == "open")
    finally:
        conn.execute("revoke resilience_user from breakbrk_nobody")


def test_other_stores_see_an_open_circuit_and_its_close(stores: MakeStore) -> None:
    a, b, c = stores(), stores(), stores()
    here = shared(a, "svc", timeout=0.3)
    others = [shared(s, "svc", timeout=0.3) for s in (b, c)]
    for s in (a, b, c):
        assert s.wait_connected(10)
    trip(here)
    assert eventually(lambda: all(o.state is CircuitState.OPEN for o in others))
    for other in others:
        with pytest.raises(CircuitOpenError):
            other.execute(ok)
    # The trial closes it for everyone (a shared breaker asks the database
    # at its first call past the deadline, so a state read alone stays OPEN).
    assert eventually(lambda: here.execute(ok, fallback=lambda: "rejected") == "ok")
    assert eventually(lambda: all(o.state is CircuitState.CLOSED for o in others))


def test_a_lost_notification_costs_at_most_a_refresh(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """A process that misses the NOTIFY (here: the row is changed behind
    every store's back, as a write whose NOTIFY was lost) still learns the
    news from its refresh."""
    a = stores(refresh_interval=0.2)
    breaker = shared(a, "svc", timeout=60)
    assert a.wait_connected(10)
    trip(breaker)
    assert a.flush()
    breaker_b = shared(stores(refresh_interval=0.2), "svc", timeout=60)
    assert eventually(lambda: breaker_b.state is CircuitState.OPEN)
    conn.execute(
        "update resilience.circuits set state = 'closed', open_until = null,"
        " version = version + 1 where name = 'svc'"
    )
    assert eventually(lambda: breaker.state is CircuitState.CLOSED)
    assert eventually(lambda: breaker_b.state is CircuitState.CLOSED)


def test_one_probe_question_per_process_and_one_probe_in_all(stores: MakeStore) -> None:
    made = [stores() for _ in range(3)]
    breakers = [shared(s, "svc", timeout=0.5) for s in made]
    for s in made:
        assert s.wait_connected(10)
    trip(breakers[0])
    assert eventually(lambda: all(b.state is CircuitState.OPEN for b in breakers))
    assert eventually(lambda: breakers[0].retry_after == 0.0 or breakers[0].retry_after is None)
    release = threading.Event()
    trials: list[int] = []
    lock = threading.Lock()

    def trial(i: int) -> str:
        with lock:
            trials.append(i)
        release.wait(20)
        return "ok"

    def caller(i: int) -> None:
        breaker = breakers[i % 3]
        for _ in range(200):
            try:
                breaker.execute(trial, i % 3)
                return
            except CircuitOpenError:
                threading.Event().wait(0.01)

    threading.Event().wait(0.6)  # past the database's deadline too
    pool = [threading.Thread(target=caller, args=(i,)) for i in range(96)]
    for t in pool:
        t.start()
    assert eventually(lambda: len(trials) >= 1)
    threading.Event().wait(0.5)  # give a second, wrong trial a chance to start
    with lock:
        assert len(trials) == 1, trials
    release.set()
    for t in pool:
        t.join(30)
    assert not any(t.is_alive() for t in pool)
    assert all(s.probe_questions <= 1 for s in made), [s.probe_questions for s in made]
    assert made[trials[0]].probe_questions == 1
    assert eventually(lambda: all(b.state is CircuitState.CLOSED for b in breakers))


def test_clock_skew_between_processes_does_not_matter(stores: MakeStore) -> None:
    """Each process has its own clock; only the database's decides."""
    early, late = ManualClock(start=0.0), ManualClock(start=1e9)
    a, b = stores(), stores()
    here = shared(a, "svc", timeout=30, clock=early)
    there = shared(b, "svc", timeout=30, clock=late)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(here)
    assert eventually(lambda: there.state is CircuitState.OPEN)
    # The deadline is the database's, read through this process's estimate
    # of the database clock: about 30 s, give or take that estimate's error
    # (a CI run measured 30.0008), never this process's 0 or 1e9.
    wait = there.retry_after
    assert wait is not None and 25 < wait <= 31
    late.advance(31)  # its own clock says the 30 s are over; the database's does not
    with pytest.raises(CircuitOpenError) as info:
        there.execute(ok)
    assert info.value.retry_after is not None and 20 < info.value.retry_after <= 31
    wait = there.retry_after
    assert wait is not None and 20 < wait <= 31  # adopted the database's deadline


def test_concurrent_writers_converge_on_the_row(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """Four stores reset, trip and open one circuit at once. Whatever the
    order, every store ends with the row's state: a store must not keep a
    state older than its own accepted write (it used to, when a NOTIFY of
    older news was handled before its write landed: row and three stores
    open, the fourth closed for good)."""
    made = [stores() for _ in range(4)]
    breakers = [shared(s, "svc", timeout=60) for s in made]
    for s in made:
        assert s.wait_connected(10)
    for _ in range(4):  # rounds: the interleaving that breaks is not every time's
        _writers_round(made, breakers, conn)


def _storm(breaker: CircuitBreaker, barrier: threading.Barrier) -> None:
    barrier.wait()
    for k in range(30):
        if k % 3 == 0:
            breaker.reset()
        elif k % 3 == 1:
            try:
                breaker.execute(fail)
            except (Boom, CircuitOpenError):
                pass
        else:
            breaker.open(60)


def _writers_round(
    made: list[SharedCircuitStore], breakers: list[CircuitBreaker], conn: psycopg.Connection[Any]
) -> None:
    barrier = threading.Barrier(len(breakers))
    pool = [threading.Thread(target=_storm, args=(b, barrier)) for b in breakers]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    for s in made:
        assert s.flush()
    final = row(conn, "svc")
    assert final is not None
    expected = CircuitState(final[0])
    assert eventually(lambda: all(b.state is expected for b in breakers)), (
        final,
        [b.state for b in breakers],
    )


# -- a database that hangs -------------------------------------------------------


@contextmanager
def frozen_backend(conn: psycopg.Connection[Any]) -> Iterator[int]:
    """SIGSTOPs the backend serving the store (found by application_name),
    and always SIGCONTs it."""
    pids = [
        r[0]
        for r in conn.execute(
            "select pid from pg_stat_activity"
            " where application_name = 'pgresilience-circuits' and datname = current_database()"
        )
    ]
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGSTOP)
    try:
        yield pids[0]
    finally:
        os.kill(pids[0], signal.SIGCONT)


def test_a_frozen_database_never_makes_closed_calls_wait_or_fail(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    store = stores(request_timeout=5.0)
    breaker = shared(store, "svc", failure_threshold=3, timeout=60)
    assert store.wait_connected(10) and store.flush()
    with frozen_backend(conn):
        done = threading.Event()
        outcomes: list[str] = []

        def calls() -> None:
            for i in range(200):
                try:
                    outcomes.append(breaker.execute(fail if i in (10, 11, 12) else ok))
                except Boom:
                    outcomes.append("boom")
                except CircuitOpenError:
                    outcomes.append("rejected")
            breaker.health()
            done.set()

        thread = threading.Thread(target=calls)
        thread.start()
        # Finished while the database is still frozen, well before one
        # request_timeout: no call waited for it.
        assert done.wait(2.5), "a call waited for the frozen database"
        thread.join(5)
        assert outcomes[:10] == ["ok"] * 10
        assert outcomes[10:13] == ["boom"] * 3
        assert set(outcomes[13:]) == {"rejected"}
        assert eventually(lambda: not store.available, 10)
        assert "deciding locally" in breaker.health()["message"]
        assert breaker.health()["shared_store"] == "unavailable"
    # Back: the unsent trip is published.
    assert eventually(lambda: (row(conn, "svc") or ("",))[0] == "open", 15)


def test_a_frozen_database_at_probe_time_delays_one_caller_at_most(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    clock = ManualClock()
    store = stores(request_timeout=4.0)
    breaker = shared(store, "svc", timeout=10, clock=clock)
    assert store.wait_connected(10)
    trip(breaker)
    assert store.flush()
    with frozen_backend(conn):
        clock.advance(10)
        results: list[str] = []
        lock = threading.Lock()
        finished = threading.Event()
        barrier = threading.Barrier(32)

        def caller() -> None:
            barrier.wait()
            try:
                outcome = breaker.execute(ok)
            except CircuitOpenError as error:
                outcome = f"rejected {error.retry_after}"
            with lock:
                results.append(outcome)
                if len(results) == 32:
                    finished.set()

        pool = [threading.Thread(target=caller) for _ in range(32)]
        for t in pool:
            t.start()
        # 31 callers are told at once; only the asker waits, about request_timeout.
        assert eventually(lambda: len(results) >= 31, 2.0), results
        assert finished.wait(10)
        for t in pool:
            t.join(5)
        assert results.count("rejected 0.0") == 31
        assert results.count("ok") == 1  # decided locally: the trial ran
    assert breaker.state is CircuitState.CLOSED


def test_a_frozen_database_at_probe_time_does_not_hold_asyncio_tasks(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    clock = ManualClock()
    store = stores(request_timeout=4.0)
    breaker = shared(store, "svc", timeout=10, clock=clock)
    assert store.wait_connected(10)
    trip(breaker)
    assert store.flush()

    async def call() -> str:
        return "ok"

    async def main() -> list[str]:
        async def one() -> str:
            try:
                return await breaker.execute_async(call)
            except CircuitOpenError as error:
                return f"rejected {error.retry_after}"

        clock.advance(10)
        tasks = [asyncio.ensure_future(one()) for _ in range(30)]
        # The loop is not blocked: all but the asker are answered at once.
        for _ in range(400):  # about half a request_timeout
            await asyncio.sleep(0.005)
            if sum(t.done() for t in tasks) >= 29:
                break
        assert sum(t.done() for t in tasks) >= 29
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 10))

    with frozen_backend(conn):
        results = asyncio.run(main())
    assert results.count("rejected 0.0") == 29
    assert results.count("ok") == 1


def test_a_cancelled_probe_asker_does_not_leak_the_question(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """The asyncio task asking the probe question is cancelled while the
    database is frozen: the question must not stay "in flight" for ever
    (every later caller would be rejected with retry_after 0.0)."""
    store = stores(request_timeout=2.0, retry_interval=0.2)
    # The real clock: once the database answers again, its clock decides.
    breaker = shared(store, "svc", timeout=0.5)
    assert store.wait_connected(10)
    trip(breaker)
    assert store.flush()

    async def call() -> str:
        return "ok"

    async def ask_and_cancel() -> None:
        task = asyncio.ensure_future(breaker.execute_async(call))
        await asyncio.sleep(0.2)  # the task now waits for the frozen database
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with frozen_backend(conn):
        threading.Event().wait(0.6)  # the open time is over, by both clocks
        asyncio.run(ask_and_cancel())
    # Later callers get to ask (and, the database being back, run the trial).
    assert eventually(lambda: breaker.execute(ok, fallback=lambda: "rejected") == "ok")
    assert breaker.state is CircuitState.CLOSED


def test_operator_actions_reach_other_stores_but_not_a_metrics_only_one(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """force_open, disable and reset always win, in every process: a reset
    after a disable used to leave the other processes DISABLED for good
    (a remote CLOSED was refused in DISABLED), the row saying closed."""
    a, b, c = stores(), stores(), stores()
    here = shared(a, "svc", timeout=60)
    there = shared(b, "svc", timeout=60)
    dry = shared(c, "svc", timeout=60)
    for s in (a, b, c):
        assert s.wait_connected(10)
    dry.metrics_only()
    for action, expected in (
        (here.force_open, CircuitState.FORCED_OPEN),
        (here.disable, CircuitState.DISABLED),
        (here.reset, CircuitState.CLOSED),
    ):
        action()
        assert eventually(lambda: there.state is expected), expected  # noqa: B023
        assert a.flush()
        assert (row(conn, "svc") or ("",))[0] == expected.value
    assert dry.state is CircuitState.METRICS_ONLY
    here.force_open()
    assert eventually(lambda: there.state is CircuitState.FORCED_OPEN)
    with pytest.raises(CircuitOpenError) as info:
        there.execute(ok)
    assert info.value.retry_after is None  # only a reset helps, in every process
    # And a DISABLED store's breaker still passes everything.
    here.disable()
    assert eventually(lambda: there.state is CircuitState.DISABLED)
    assert there.execute(fail, fallback=lambda: "cached") == "cached"


def test_a_prober_that_dies_loses_its_lease(stores: MakeStore) -> None:
    a, b = stores(probe_lease=1.0), stores(probe_lease=1.0)
    here = shared(a, "svc", timeout=0.3)
    there = shared(b, "svc", timeout=0.3)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(here)
    assert eventually(lambda: there.state is CircuitState.OPEN)
    hung = threading.Event()
    release = threading.Event()

    def hang() -> str:
        hung.set()
        release.wait(30)
        return "too late"

    prober = threading.Thread(
        target=lambda: eventually(lambda: here.execute(hang, fallback=lambda: "") == "too late")
    )
    prober.start()
    try:
        assert hung.wait(10)
        a.close()  # the prober's process dies mid-probe
        with pytest.raises(CircuitOpenError):
            there.execute(ok)  # the lease still holds
        # Once the lease is over, the other process probes and closes.
        assert eventually(lambda: there.execute(ok, fallback=lambda: "rejected") == "ok")
    finally:
        release.set()
        prober.join(30)
    assert there.state is CircuitState.CLOSED


def test_close_does_not_hang_on_a_frozen_database(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    store = stores(request_timeout=1.0)
    breaker = shared(store, "svc", timeout=60)
    assert store.wait_connected(10) and store.flush()
    with frozen_backend(conn):
        trip(breaker)  # a publish now hangs on the frozen backend
        closer = threading.Thread(target=store.close)
        closer.start()
        closer.join(8)
        assert not closer.is_alive(), "close() waited for the frozen database"
    assert breaker.execute(ok, fallback=lambda: "cached") == "cached"  # still open, locally


def test_a_locked_row_does_not_hold_back_other_circuits_news(
    stores: MakeStore, conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Someone holds a lock on circuit A's row (an admin's open transaction).
    A's writes wait lock_timeout and fail; circuit B, in the same store,
    must still reach the other processes within the bound."""
    a_here = stores(request_timeout=1.0, retry_interval=0.2)
    other = stores()
    first = shared(a_here, "a-locked", timeout=60)
    second = shared(a_here, "b-free", timeout=60)
    second_there = shared(other, "b-free", timeout=60)
    assert a_here.wait_connected(10) and other.wait_connected(10)
    trip(first)
    assert a_here.flush()
    first.reset()
    assert a_here.flush()
    with psycopg.connect(dsn) as locker:
        locker.execute("select * from resilience.circuits where name = 'a-locked' for update")
        trip(first)  # its publish waits for the lock, and fails
        trip(second)
        seen = eventually(lambda: second_there.state is CircuitState.OPEN, 8)
        locker.rollback()
    assert seen, "news of b-free held back behind a-locked's row lock"
    # And once the lock is gone, A's trip is published too.
    assert eventually(lambda: (row(conn, "a-locked") or ("",))[0] == "open", 15)


def test_a_hung_shared_trial_reopens_for_everyone(stores: MakeStore) -> None:
    """max_wait_in_half_open with shared state: the prober's trial hangs;
    once the wait is over, its re-open reaches the others (they are not
    left waiting on the prober's lease)."""
    a, b = stores(probe_lease=30), stores(probe_lease=30)
    here = shared(a, "svc", timeout=0.3, max_wait_in_half_open=0.5)
    there = shared(b, "svc", timeout=0.3)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(here)
    assert eventually(lambda: there.state is CircuitState.OPEN)
    hung, release = threading.Event(), threading.Event()

    def hang() -> str:
        hung.set()
        release.wait(30)
        return "late"

    prober = threading.Thread(
        target=lambda: eventually(lambda: here.execute(hang, fallback=lambda: "") == "late")
    )
    prober.start()
    try:
        assert hung.wait(10)
        assert a.flush()
        # Past max_wait: the next call here re-opens (lazily) and publishes.
        assert eventually(
            lambda: (
                here.execute(ok, fallback=lambda: "rejected") == "rejected"
                and here.state is CircuitState.OPEN
            )
        )
        assert a.flush()
        # The others hear the re-open: admitted after its open time (here within
        # the 10 s bound), not after the 30 s lease of the hung prober.
        assert eventually(lambda: there.execute(ok, fallback=lambda: "rejected") == "ok")
    finally:
        release.set()
        prober.join(30)


def test_an_operator_half_open_episode_is_published_when_it_ends(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    a, b = stores(), stores()
    here = shared(a, "svc", timeout=60)
    there = shared(b, "svc", timeout=60)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(there)
    assert eventually(lambda: here.state is CircuitState.OPEN)
    here.half_open()  # local: not published
    assert a.flush()
    assert (row(conn, "svc") or ("",))[0] == "open"
    assert here.execute(ok) == "ok"  # ends the episode: published as an operator action
    assert eventually(lambda: there.state is CircuitState.CLOSED)
    assert (row(conn, "svc") or ("",))[0] == "closed"


def test_an_unreachable_database_leaves_the_breaker_local(stores: MakeStore) -> None:
    store = stores("host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2", retry_interval=0.2)
    breaker = shared(store, "svc", failure_threshold=2, timeout=60)
    assert breaker.execute(ok) == "ok"
    trip_calls = [breaker.execute(fail, fallback=lambda: "cached") for _ in range(2)]
    assert trip_calls == ["cached", "cached"]
    assert breaker.state is CircuitState.OPEN
    assert eventually(lambda: breaker.health()["shared_store"] == "unavailable")
    assert "deciding locally" in breaker.health()["message"]
    registry = CircuitBreakerRegistry(shared_store=store)
    assert registry.get_breaker("other", shared=True).execute(ok) == "ok"
    assert registry.get_all_health()["other"]["shared_store"] == "unavailable"


def test_threads_of_one_process_racing_transitions_converge_with_the_others(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """Eight threads of one process reset, trip and open one breaker at
    once: its transitions may be handed to the store in another order than
    they were made. The process, the row and an observer end up agreeing."""
    busy, observer = stores(), stores()
    breaker = shared(busy, "svc", timeout=60)
    watcher = shared(observer, "svc", timeout=60)
    assert busy.wait_connected(10) and observer.wait_connected(10)
    for _ in range(4):
        barrier = threading.Barrier(8)
        pool = [threading.Thread(target=_storm, args=(breaker, barrier)) for _ in range(8)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(30)
        assert busy.flush()
        final = row(conn, "svc")
        assert final is not None
        expected = CircuitState(final[0])
        assert eventually(lambda: breaker.state is expected and watcher.state is expected), (  # noqa: B023
            final,
            breaker.state,
            watcher.state,
        )


def test_asyncio_tasks_at_probe_time_ask_once_and_run_the_permitted_trials(
    stores: MakeStore,
) -> None:
    store = stores()
    breaker = shared(store, "svc", timeout=0.3, half_open_max_calls=2, success_threshold=2)
    assert store.wait_connected(10)
    trip(breaker)
    assert store.flush()
    threading.Event().wait(0.4)  # the open time is over, by both clocks

    async def main() -> list[str]:
        release = asyncio.Event()
        trials = 0

        async def trial() -> str:
            nonlocal trials
            trials += 1
            await release.wait()
            return "ok"

        async def one() -> str:
            try:
                return await breaker.execute_async(trial)
            except CircuitOpenError as error:
                return f"rejected {error.retry_after}"

        # While the one question is out, every other task is turned away.
        tasks = [asyncio.ensure_future(one()) for _ in range(256)]
        for _ in range(500):
            await asyncio.sleep(0.01)
            if trials == 1 and sum(t.done() for t in tasks) == 255:
                break
        assert trials == 1
        # Granted: the second trial slot goes to one task of the next wave.
        tasks += [asyncio.ensure_future(one()) for _ in range(100)]
        for _ in range(500):
            await asyncio.sleep(0.01)
            if sum(t.done() for t in tasks) == 354:
                break
        assert trials == 2
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 10))

    results = asyncio.run(main())
    assert results.count("ok") == 2
    assert results.count("rejected 0.0") == 354
    assert store.probe_questions == 1
    assert breaker.state is CircuitState.CLOSED


def test_a_probe_question_the_database_refuses_is_answered_at_once(
    stores: MakeStore, make_role: Callable[..., str]
) -> None:
    """The probe question fails with an error that is not a lost connection
    (here 42501: a role without resilience_user). The asker must decide
    locally then, not wait out request_timeout for an answer never coming."""
    clock = ManualClock()
    store = stores(make_role("breakbrk_nobody"), request_timeout=30.0)
    breaker = shared(store, "svc", timeout=10, clock=clock)
    assert store.wait_connected(10)
    trip(breaker)
    clock.advance(10)
    outcome: list[str] = []
    asker = threading.Thread(target=lambda: outcome.append(breaker.execute(ok)))
    asker.start()
    asker.join(10)  # a third of request_timeout
    assert outcome == ["ok"], "the asker waited for an answer that never came"
    assert breaker.state is CircuitState.CLOSED


def test_a_failed_probe_elsewhere_replaces_the_lease_this_process_waits_for(
    stores: MakeStore,
) -> None:
    a, b = stores(probe_lease=30), stores(probe_lease=30)
    here = shared(a, "svc", timeout=0.5)
    there = shared(b, "svc", timeout=0.5)
    assert a.wait_connected(10) and b.wait_connected(10)
    trip(here)
    assert eventually(lambda: there.state is CircuitState.OPEN)
    probing, release = threading.Event(), threading.Event()

    def failing_trial() -> str:
        probing.set()
        release.wait(30)
        raise Boom("still down")

    def probe() -> None:
        for _ in range(500):
            try:
                here.execute(failing_trial)
                return
            except CircuitOpenError:
                threading.Event().wait(0.01)
            except Boom:
                return

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        assert probing.wait(10)
        assert eventually(lambda: there.retry_after == 0.0)  # its own deadline is over too
        # Asking now, this process is told of the 30 s lease.
        with pytest.raises(CircuitOpenError):
            there.execute(ok)
        assert (there.retry_after or 0.0) > 20
        release.set()
        prober.join(10)
        assert here.state is CircuitState.OPEN
        # The failed probe re-opened for 0.5 s: this process is admitted after
        # that (within the bound), not after the lease it was told of.
        assert eventually(lambda: there.execute(ok, fallback=lambda: "rejected") == "ok")
    finally:
        release.set()
        prober.join(10)


def test_a_removed_shared_breaker_leaves_its_store(
    stores: MakeStore, conn: psycopg.Connection[Any]
) -> None:
    """registry.remove(name) also detaches a shared breaker: its store no
    longer applies the others' transitions to it nor publishes its own."""
    a, b = stores(), stores()
    registry = CircuitBreakerRegistry(shared_store=a)
    removed = registry.get_breaker("removed", shared=True, failure_threshold=1, timeout=60)
    witness_a = registry.get_breaker("witness", shared=True, failure_threshold=1, timeout=60)
    there, witness_b = shared(b, "removed", timeout=60), shared(b, "witness", timeout=60)
    assert a.wait_connected(10) and b.wait_connected(10)
    assert registry.remove("removed") is removed
    assert removed.gate is None
    trip(there)
    trip(witness_b)  # published after the other: once store a has it, it had both
    assert b.flush()
    assert eventually(lambda: witness_a.state is CircuitState.OPEN)
    assert removed.state is CircuitState.CLOSED
    version = row(conn, "removed")
    trip(removed)
    assert a.flush()
    assert row(conn, "removed") == version
