"""Trying to break one breaker with many threads and asyncio tasks at once:
trial slots at the half-open boundary, permits of cancelled or interrupted
trials, counters, re-entrant listeners.

Trials block on events the test releases, so every check is about what
happened, never how long it took; joins are bounded so a deadlock fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from typing import Any

import pytest

from pgresilience.breakers import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ManualClock,
    Transition,
)

from .conftest import Boom, fail, ok


class Transitions:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Transition] = []

    def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
        with self.lock:
            self.seen.append(transition)

    def count(self, old: CircuitState, new: CircuitState) -> int:
        return sum(1 for t in self.seen if t.old is old and t.new is new)


def join_all(threads: list[threading.Thread], timeout: float = 30.0) -> None:
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads hung (deadlock?)"


def tripped(clock: ManualClock, **options: Any) -> CircuitBreaker:
    options.setdefault("failure_threshold", 1)
    options.setdefault("timeout", 10)
    breaker = CircuitBreaker("c", clock=clock, **options)
    with pytest.raises(Boom):
        breaker.execute(fail)
    assert breaker.state is CircuitState.OPEN
    return breaker


@pytest.mark.parametrize("threads,slots", [(16, 1), (64, 3)])
def test_threads_at_the_boundary_get_exactly_the_trial_slots(
    clock: ManualClock, threads: int, slots: int
) -> None:
    for _ in range(5):  # rounds: a race need not show on the first
        _boundary_round(clock, threads, slots)


def _boundary_round(clock: ManualClock, threads: int, slots: int) -> None:
    breaker = tripped(clock, half_open_max_calls=slots, success_threshold=slots)
    clock.advance(10)
    release = threading.Event()
    admitted = Counter[str]()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def trial() -> str:
        with lock:
            admitted["trial"] += 1
        release.wait(30)
        return "ok"

    def caller() -> None:
        barrier.wait()
        try:
            breaker.execute(trial)
        except CircuitOpenError as error:
            with lock:
                admitted[f"rejected {error.retry_after}"] += 1

    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    # Every caller either runs a trial or is rejected; wait for all rejections.
    for _ in range(3000):
        with lock:
            if admitted["rejected 0.0"] + admitted["trial"] == threads:
                break
        threading.Event().wait(0.01)
    assert admitted == {"trial": slots, "rejected 0.0": threads - slots}
    release.set()
    join_all(pool)
    assert breaker.state is CircuitState.CLOSED
    metrics = breaker.metrics
    assert metrics.rejections == threads - slots
    assert metrics.successes == slots


def test_asyncio_tasks_at_the_boundary_get_exactly_the_trial_slots(clock: ManualClock) -> None:
    breaker = tripped(clock, half_open_max_calls=4, success_threshold=4)
    clock.advance(10)

    async def main() -> Counter[str]:
        release = asyncio.Event()
        outcome = Counter[str]()

        async def trial() -> str:
            outcome["trial"] += 1
            await release.wait()
            return "ok"

        async def caller() -> None:
            try:
                await breaker.execute_async(trial)
            except CircuitOpenError as error:
                outcome[f"rejected {error.retry_after}"] += 1

        tasks = [asyncio.ensure_future(caller()) for _ in range(256)]
        while outcome["trial"] + outcome["rejected 0.0"] < 256:
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        return outcome

    assert asyncio.run(main()) == {"trial": 4, "rejected 0.0": 252}
    assert breaker.state is CircuitState.CLOSED


def test_cancelled_async_trials_give_their_slots_back(clock: ManualClock) -> None:
    breaker = tripped(clock, half_open_max_calls=3)
    clock.advance(10)

    async def main() -> None:
        for _ in range(50):  # many episodes of cancelled trials: no slot leaks
            started = 0

            async def hang() -> None:
                nonlocal started
                started += 1
                await asyncio.Event().wait()

            tasks = [asyncio.ensure_future(breaker.execute_async(hang)) for _ in range(200)]
            while sum(t.done() for t in tasks) < 197:
                await asyncio.sleep(0)
            assert started == 3
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3
            assert breaker.state is CircuitState.HALF_OPEN
        assert await breaker.execute_async(asyncio.sleep, 0, "ok") == "ok"

    asyncio.run(main())
    assert breaker.state is CircuitState.CLOSED


def test_interrupted_thread_trials_give_their_slots_back(clock: ManualClock) -> None:
    breaker = tripped(clock, half_open_max_calls=2)
    clock.advance(10)
    for _ in range(20):
        barrier = threading.Barrier(2)
        pool = [
            threading.Thread(target=_interrupted_trial, args=(breaker, barrier)) for _ in range(2)
        ]
        for t in pool:
            t.start()
        join_all(pool)
        assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.failures == 1  # the trip only
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def _interrupted_trial(breaker: CircuitBreaker, barrier: threading.Barrier) -> None:
    def interrupted() -> None:
        barrier.wait()  # both trials run at once
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.execute(interrupted)


def test_timed_out_trial_is_a_failure_and_frees_its_slot(clock: ManualClock) -> None:
    breaker = tripped(clock, half_open_max_calls=1, call_timeout=0.05)

    async def main() -> None:
        clock.advance(10)
        with pytest.raises(TimeoutError):
            await breaker.execute_async(asyncio.sleep, 60)
        assert breaker.state is CircuitState.OPEN  # a failed trial re-opens
        clock.advance(10)
        assert await breaker.execute_async(asyncio.sleep, 0, "ok") == "ok"

    asyncio.run(main())
    assert breaker.state is CircuitState.CLOSED


def test_counters_are_exact_under_threads() -> None:
    heard = Counter[str]()
    lock = threading.Lock()

    class Counting:
        def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
            with lock:
                heard["success"] += 1

        def on_failure(self, breaker: CircuitBreaker, error: BaseException, d: float) -> None:
            with lock:
                heard["failure"] += 1

    breaker = CircuitBreaker("c", failure_threshold=None, listeners=[Counting()])
    plain = CircuitBreaker("plain", failure_threshold=None)  # no listeners: the fast path
    barrier = threading.Barrier(32)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for i in range(400):
            for b in (breaker, plain):
                try:
                    b.execute(fail if (i + seed) % 4 == 0 else ok)
                except Boom:
                    pass
            if rng.random() < 0.01:
                threading.Event().wait(0)

    pool = [threading.Thread(target=hammer, args=(s,)) for s in range(32)]
    for t in pool:
        t.start()
    join_all(pool)
    for b in (breaker, plain):
        m = b.metrics
        assert (m.calls, m.successes, m.failures) == (12800, 9600, 3200), b.name
    assert heard == {"success": 9600, "failure": 3200}


def test_a_failure_storm_trips_exactly_once(clock: ManualClock) -> None:
    recorder = Transitions()
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=5, timeout=10, listeners=[recorder]
    )
    barrier = threading.Barrier(48)

    def storm() -> None:
        barrier.wait()
        for _ in range(50):
            try:
                breaker.execute(fail)
            except (Boom, CircuitOpenError):
                pass

    pool = [threading.Thread(target=storm) for _ in range(48)]
    for t in pool:
        t.start()
    join_all(pool)
    assert recorder.count(CircuitState.CLOSED, CircuitState.OPEN) == 1
    assert len(recorder.seen) == 1
    m = breaker.metrics
    assert m.calls + m.rejections == 48 * 50


def test_stress_across_boundaries_keeps_transitions_consistent() -> None:
    """Threads call, fail and move the clock;
    whatever interleaving, every episode is a proper chain and the
    lifetime counters add up."""
    clock = ManualClock()
    recorder = Transitions()
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=3,
        timeout=1,
        half_open_max_calls=2,
        success_threshold=2,
        listeners=[recorder],
    )
    rejected = Counter[str]()
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1500):
            if rng.random() < 0.01:
                clock.advance(0.5)  # any thread may move time, mid-episode
            try:
                breaker.execute(fail if rng.random() < 0.4 else ok)
            except Boom:
                pass
            except CircuitOpenError:
                with lock:
                    rejected["n"] += 1

    pool = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in pool:
        t.start()
    join_all(pool, 60)
    opened = sum(1 for t in recorder.seen if t.new is CircuitState.OPEN)
    left_open = sum(1 for t in recorder.seen if t.old is CircuitState.OPEN)
    assert opened > 0
    assert opened - left_open == (1 if breaker.state is CircuitState.OPEN else 0)
    halves = sum(1 for t in recorder.seen if t.new is CircuitState.HALF_OPEN)
    left_half = sum(1 for t in recorder.seen if t.old is CircuitState.HALF_OPEN)
    assert halves - left_half == (1 if breaker.state is CircuitState.HALF_OPEN else 0)
    m = breaker.metrics
    assert m.rejections == rejected["n"]
    assert m.calls == m.successes + m.failures + m.ignored


def test_reentrant_listeners_from_many_threads_do_not_deadlock(clock: ManualClock) -> None:
    class Reentrant:
        def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
            breaker.health()
            if transition.new is CircuitState.OPEN:
                breaker.reset()

        def on_failure(self, breaker: CircuitBreaker, error: BaseException, d: float) -> None:
            breaker.execute(ok, fallback=lambda: "fb")

        def on_rejected(self, breaker: CircuitBreaker) -> None:
            breaker.state  # noqa: B018 - a read that takes the lock

    breaker = CircuitBreaker("c", clock=clock, failure_threshold=2, listeners=[Reentrant()])
    barrier = threading.Barrier(16)

    def run() -> None:
        barrier.wait()
        for _ in range(200):
            breaker.execute(fail, fallback=lambda: breaker.execute(ok, fallback=lambda: "x"))

    pool = [threading.Thread(target=run, daemon=True) for _ in range(16)]
    for t in pool:
        t.start()
    join_all(pool)


def test_event_loops_in_several_threads_share_one_breaker(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=None)

    async def one(i: int) -> None:
        async def call() -> int:
            await asyncio.sleep(0)
            if i % 3 == 0:
                raise Boom("x")
            return i

        try:
            await breaker.execute_async(call)
        except Boom:
            pass

    def loop() -> None:
        async def main() -> None:
            await asyncio.gather(*(one(i) for i in range(300)))

        asyncio.run(main())

    pool = [threading.Thread(target=loop) for _ in range(8)]
    for t in pool:
        t.start()
    join_all(pool)
    m = breaker.metrics
    assert (m.calls, m.failures, m.successes) == (2400, 8 * 100, 8 * 200)


def test_cancelled_async_blocks_and_streams_give_their_slots_back(clock: ManualClock) -> None:
    breaker = tripped(clock, half_open_max_calls=1)

    @breaker
    async def stream() -> Any:
        yield 1
        await asyncio.Event().wait()
        yield 2

    async def block() -> None:
        async with breaker:
            await asyncio.Event().wait()

    async def consume() -> None:
        async for _ in stream():
            pass

    async def main() -> None:
        clock.advance(10)
        for body in (block, consume) * 10:
            task = asyncio.ensure_future(body())
            for _ in range(5):
                await asyncio.sleep(0)
            with pytest.raises(CircuitOpenError):
                await breaker.execute_async(asyncio.sleep, 0)  # the slot is taken
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert breaker.state is CircuitState.HALF_OPEN
        assert await breaker.execute_async(asyncio.sleep, 0, "ok") == "ok"

    asyncio.run(main())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failures == 1  # the trip only


def test_calls_admitted_while_closed_never_count_as_trials(clock: ManualClock) -> None:
    """Sixteen calls admitted while CLOSED are still running when the circuit
    trips and its open time ends; their late successes carry stale permits
    and must not close the circuit (no trial ran)."""
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=10)
    release = threading.Event()
    admitted = threading.Barrier(17)

    def slow_call() -> str:
        admitted.wait(10)
        release.wait(30)
        return "late"

    pool = [threading.Thread(target=breaker.execute, args=(slow_call,)) for _ in range(16)]
    for t in pool:
        t.start()
    admitted.wait(10)  # all sixteen are inside their calls
    with pytest.raises(Boom):
        breaker.execute(fail)
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    release.set()
    join_all(pool)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.successes == 16
    assert breaker.execute(ok) == "ok"  # the real trial
    assert breaker.state is CircuitState.CLOSED


def test_async_stream_fallback_may_be_an_async_iterable(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=10)

    async def cached(prompt: str) -> Any:
        yield f"cached {prompt}"

    @breaker(fallback=cached)
    async def stream(prompt: str) -> Any:
        raise Boom("down before the first item")
        yield prompt  # pragma: no cover - makes this an async generator

    async def main() -> tuple[list[str], list[str]]:
        first = [item async for item in stream("a")]  # failure before the first item
        second = [item async for item in stream("b")]  # rejection
        return first, second

    assert asyncio.run(main()) == (["cached a"], ["cached b"])
    assert breaker.metrics.rejections == 1
