"""Async calls, and half-open admission under threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from pgresilience.breakers import CircuitBreaker, CircuitOpenError, CircuitState, ManualClock

from .helpers import Boom, make, run_async, trip


def half_open(max_calls: int, **options: object) -> tuple[CircuitBreaker, ManualClock]:
    breaker, clock = make(
        failure_threshold=1, timeout=5.0, half_open_max_calls=max_calls, **options
    )
    trip(breaker, 1)
    clock.advance(5)
    assert breaker.state is CircuitState.HALF_OPEN
    return breaker, clock


# -- async --------------------------------------------------------------------------


@run_async
async def test_execute_async_runs_and_counts_coroutines() -> None:
    breaker, _ = make(failure_threshold=2)

    async def answer(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def broken() -> None:
        raise Boom("down")

    assert await breaker.execute_async(answer, 21) == 42
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.execute_async(broken)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.execute_async(answer, 1)


@run_async
async def test_async_fallbacks_may_be_sync_or_async() -> None:
    breaker, _ = make(failure_threshold=1)

    async def broken() -> str:
        raise Boom("down")

    async def cached() -> str:
        return "async cache"

    assert await breaker.execute_async(broken, fallback=lambda: "sync cache") == "sync cache"
    assert await breaker.execute_async(broken, fallback=cached) == "async cache"


@run_async
async def test_decorated_coroutine_function() -> None:
    breaker, _ = make(failure_threshold=1)

    @breaker(fallback=lambda prompt: f"cached {prompt}")
    async def ask(prompt: str) -> str:
        raise Boom(prompt)

    assert asyncio.iscoroutinefunction(ask)
    assert await ask("a") == "cached a"
    assert breaker.state is CircuitState.OPEN


@run_async
async def test_call_timeout_cancels_a_hanging_call_and_counts_it_as_a_failure() -> None:
    breaker, _ = make(failure_threshold=1, call_timeout=0.05)
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    with pytest.raises(TimeoutError):
        await breaker.execute_async(hangs)
    assert breaker.state is CircuitState.OPEN


@run_async
async def test_a_cancelled_trial_gives_its_slot_back_and_counts_as_nothing() -> None:
    breaker, _ = half_open(1)
    started = asyncio.Event()

    async def trial() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(breaker.execute_async(trial))
    await started.wait()
    with pytest.raises(CircuitOpenError):  # the one slot is taken
        await breaker.execute_async(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.ignored == 1

    async def fine() -> str:
        return "fine"

    assert await breaker.execute_async(fine) == "fine"
    assert breaker.state is CircuitState.CLOSED


# -- concurrency in half-open ------------------------------------------------------------


@pytest.mark.parametrize("max_calls", [1, 3])
def test_threads_in_half_open_admit_exactly_half_open_max_calls(max_calls: int) -> None:
    breaker, _ = half_open(max_calls, success_threshold=100)
    threads = 16
    gate = threading.Event()
    ready = threading.Barrier(threads)
    running = []

    def trial() -> str:
        running.append(threading.get_ident())
        gate.wait(10)
        return "ok"

    def attempt() -> str:
        ready.wait(10)
        try:
            return breaker.execute(trial)
        except CircuitOpenError:
            return "rejected"

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(attempt) for _ in range(threads)]
        # Rejections are immediate; the admitted calls wait on the gate.
        while breaker.metrics.rejections < threads - max_calls:
            threading.Event().wait(0.001)
        gate.set()
        results = [f.result(10) for f in futures]
    assert results.count("ok") == max_calls
    assert results.count("rejected") == threads - max_calls
    assert len(running) == max_calls


@pytest.mark.parametrize("max_calls", [1, 4])
@run_async
async def test_tasks_in_half_open_admit_exactly_half_open_max_calls(max_calls: int) -> None:
    breaker, _ = half_open(max_calls, success_threshold=100)
    release = asyncio.Event()
    running = 0

    async def trial() -> str:
        nonlocal running
        running += 1
        await release.wait()
        return "ok"

    async def attempt() -> str:
        try:
            return await breaker.execute_async(trial)
        except CircuitOpenError:
            return "rejected"

    tasks = [asyncio.create_task(attempt()) for _ in range(40)]
    while breaker.metrics.rejections < 40 - max_calls:
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == max_calls
    assert running == max_calls


def test_event_loops_in_several_threads_share_the_half_open_slots() -> None:
    # Tasks on four event loops, each in its own thread, against one breaker.
    breaker, _ = half_open(2, success_threshold=100)
    release = threading.Event()
    loops = 4
    per_loop = 10
    started = threading.Barrier(loops)

    async def trial() -> str:
        await asyncio.to_thread(release.wait, 10)
        return "ok"

    async def attempt() -> str:
        try:
            return await breaker.execute_async(trial)
        except CircuitOpenError:
            return "rejected"

    def run_loop() -> list[str]:
        async def main() -> list[str]:
            started.wait(10)
            return list(await asyncio.gather(*(attempt() for _ in range(per_loop))))

        return asyncio.run(main())

    with ThreadPoolExecutor(loops) as pool:
        futures = [pool.submit(run_loop) for _ in range(loops)]
        while breaker.metrics.rejections < loops * per_loop - 2:
            threading.Event().wait(0.001)
        release.set()
        results = [r for f in futures for r in f.result(10)]
    assert results.count("ok") == 2


def test_many_threads_hammering_a_closed_circuit_keep_exact_counts() -> None:
    breaker, _ = make(failure_threshold=None, failure_rate_threshold=0.99, window_size=50)
    per_thread = 2000

    def work(i: int) -> None:
        for n in range(per_thread):
            if (n + i) % 10 == 0:
                try:
                    breaker.execute(_raise)
                except Boom:
                    pass
            else:
                breaker.execute(int, "1")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    m = breaker.metrics
    assert m.calls == 8 * per_thread
    assert m.failures == 8 * per_thread // 10
    assert m.state is CircuitState.CLOSED


def _raise() -> None:
    raise Boom("x")


def test_no_lock_is_held_while_the_protected_call_runs() -> None:
    # A call that runs other calls through the same breaker, in another
    # thread, and waits for them: with a lock held this would deadlock.
    breaker, _ = make()

    def outer() -> str:
        with ThreadPoolExecutor(1) as pool:
            inner: Callable[[], str] = lambda: breaker.execute(lambda: "inner")  # noqa: E731
            return pool.submit(inner).result(5)

    assert breaker.execute(outer) == "inner"
    assert breaker.metrics.calls == 2
