"""Trying to break the call forms of docs/breakers.md: execute, decorator
(functions, methods, coroutines, generators, async generators), blocks,
fallbacks, listeners and the registry."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pgresilience.breakers import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    ManualClock,
    Transition,
)

from .conftest import Boom, fail, ok


def tripped(clock: ManualClock, **options: Any) -> CircuitBreaker:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=10, **options)
    with pytest.raises(Boom):
        breaker.execute(fail)
    assert breaker.state is CircuitState.OPEN
    return breaker


# -- fallbacks -------------------------------------------------------------------


def test_execute_fallback_takes_no_arguments_decorator_fallback_takes_the_call_s(
    clock: ManualClock,
) -> None:
    breaker = tripped(clock)
    assert breaker.execute(lambda x: x, 1, fallback=lambda: "cached") == "cached"

    @breaker(fallback=lambda prompt, *, style="plain": f"cached {prompt} {style}")
    def ask(prompt: str, *, style: str = "plain") -> str:
        return prompt

    assert ask("hi", style="bold") == "cached hi bold"


def test_decorated_method_fallback_gets_self(clock: ManualClock) -> None:
    breaker = tripped(clock)

    class Client:
        def __init__(self) -> None:
            self.cache = "from cache"

        @breaker(fallback=lambda self, prompt: f"{self.cache}: {prompt}")
        def ask(self, prompt: str) -> str:
            return prompt

    assert Client().ask("hi") == "from cache: hi"
    assert Client.ask.__name__ == "ask"  # functools.wraps


def test_a_raising_fallback_raises_its_error_chained_to_the_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1)

    def bad_fallback() -> str:
        raise LookupError("no cache either")

    with pytest.raises(LookupError) as info:
        breaker.execute(fail, fallback=bad_fallback)
    assert isinstance(info.value.__context__, Boom)
    assert breaker.state is CircuitState.OPEN  # the failure still counted
    with pytest.raises(LookupError):
        breaker.execute(ok, fallback=bad_fallback)  # a rejection's fallback raising
    assert breaker.metrics.rejections == 1


def test_async_fallback_of_execute_async_is_awaited(clock: ManualClock) -> None:
    breaker = tripped(clock)

    async def cached() -> str:
        await asyncio.sleep(0)
        return "cached"

    async def call() -> str:
        return "live"

    async def main() -> tuple[Any, Any]:
        rejected = await breaker.execute_async(call, fallback=cached)
        clock.advance(10)

        async def failing() -> str:
            raise Boom("still down")

        failed = await breaker.execute_async(failing, fallback=cached)
        return rejected, failed

    assert asyncio.run(main()) == ("cached", "cached")


def test_async_decorator_fallback_sync_or_async(clock: ManualClock) -> None:
    breaker = tripped(clock)

    async def acached(prompt: str) -> str:
        return f"async {prompt}"

    @breaker(fallback=acached)
    async def ask(prompt: str) -> str:
        return prompt

    @breaker(fallback=lambda prompt: f"sync {prompt}")
    async def ask2(prompt: str) -> str:
        return prompt

    async def main() -> tuple[str, str]:
        return await ask("a"), await ask2("b")

    assert asyncio.run(main()) == ("async a", "sync b")


# -- coroutines -----------------------------------------------------------------


def test_call_timeout_cancels_and_counts_a_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, call_timeout=0.05)
    cancelled = []

    async def hang() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await breaker.execute_async(hang)

    asyncio.run(main())
    assert cancelled == [True]
    assert breaker.state is CircuitState.OPEN
    assert breaker.health()["last_failure"]["error"].startswith("TimeoutError")


def test_cancelled_coroutine_counts_nothing_and_propagates(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1)

    async def main() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(breaker.execute_async(hang, fallback=lambda: "cached"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failures == 0


# -- generators -------------------------------------------------------------------


def test_creating_a_decorated_generator_runs_nothing_and_admits_at_first_item(
    clock: ManualClock,
) -> None:
    breaker = tripped(clock)
    ran = []

    @breaker
    def stream() -> Iterator[int]:
        ran.append(True)
        yield 1

    gen = stream()  # on an OPEN circuit: no rejection yet
    assert ran == []
    with pytest.raises(CircuitOpenError):
        next(gen)
    assert ran == []


def test_generator_fallback_before_first_item_and_reraise_after(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=2)

    @breaker(fallback=lambda n: iter(["cached"]))
    def stream(n: int) -> Iterator[str]:
        for i in range(n):
            yield str(i)
        raise Boom("mid-stream")

    assert list(stream(0)) == ["cached"]  # failure before the first item
    with pytest.raises(Boom):
        list(stream(2))  # after items: never a mix of real and cached
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failures == 2


def test_an_abandoned_stream_gives_its_trial_slot_back(clock: ManualClock) -> None:
    breaker = tripped(clock)

    @breaker
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    clock.advance(10)
    gen = stream()
    assert next(gen) == 1  # the trial, holding the only slot
    with pytest.raises(CircuitOpenError):
        breaker.execute(ok)
    gen.close()
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.execute(ok) == "ok"  # the slot came back
    assert breaker.state is CircuitState.CLOSED


def test_a_garbage_collected_stream_gives_its_trial_slot_back(clock: ManualClock) -> None:
    breaker = tripped(clock)

    @breaker
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    clock.advance(10)
    gen = stream()
    next(gen)
    del gen
    gc.collect()
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_async_stream_acloses_and_times_out_per_item(clock: ManualClock) -> None:
    breaker = tripped(clock, call_timeout=0.05)

    @breaker
    async def stream() -> AsyncIterator[int]:
        yield 1
        await asyncio.Event().wait()
        yield 2

    async def main() -> None:
        clock.advance(10)
        gen = stream()
        assert await gen.__anext__() == 1
        await gen.aclose()  # abandoned: slot back, nothing counted
        assert breaker.state is CircuitState.HALF_OPEN
        gen = stream()
        assert await gen.__anext__() == 1
        with pytest.raises(TimeoutError):
            await gen.__anext__()  # call_timeout bounds each item: a failed trial

    asyncio.run(main())
    assert breaker.state is CircuitState.OPEN


def test_slow_consumer_is_not_a_slow_service(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, slow_call_duration=1.0, window_size=1, minimum_calls=1
    )

    @breaker
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    for _ in stream():
        clock.advance(5)  # the consumer dawdles
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.slow_calls == 0


# -- blocks ---------------------------------------------------------------------


def test_with_block_rejection_runs_nothing_and_nests(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=2)
    with breaker:
        with breaker:
            pass
    assert breaker.metrics.successes == 2
    with pytest.raises(Boom):
        with breaker:
            with breaker:
                raise Boom("inner")  # fails both blocks
    assert breaker.state is CircuitState.OPEN
    ran = []
    with pytest.raises(CircuitOpenError):
        with breaker:
            ran.append(True)
    assert ran == []


def test_async_with_keeps_permits_per_task(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=None)

    async def one(i: int) -> None:
        try:
            async with breaker:
                await asyncio.sleep(0)
                if i % 2:
                    raise Boom(str(i))
        except Boom:
            pass

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(main())
    metrics = breaker.metrics
    assert (metrics.calls, metrics.successes, metrics.failures) == (200, 100, 100)


# -- listeners ------------------------------------------------------------------


def test_a_raising_listener_is_logged_and_changes_nothing(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Bad:
        def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
            raise RuntimeError("listener bug")

        def on_failure(self, breaker: CircuitBreaker, error: BaseException, d: float) -> None:
            raise RuntimeError("listener bug")

        def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
            raise RuntimeError("listener bug")

        def on_rejected(self, breaker: CircuitBreaker) -> None:
            raise RuntimeError("listener bug")

    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=1, listeners=[Bad()])
    with caplog.at_level(logging.ERROR):
        with pytest.raises(Boom):
            breaker.execute(fail)
        assert breaker.execute(ok, fallback=lambda: "cached") == "cached"
        clock.advance(1)
        assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert "listener bug" in caplog.text


def test_listener_and_fallback_calling_back_into_the_breaker_do_not_deadlock(
    clock: ManualClock,
) -> None:
    seen: list[Any] = []

    class Reentrant:
        def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
            seen.append(breaker.health()["state"])
            seen.append(breaker.execute(ok, fallback=lambda: "fb-in-listener"))
            if transition.new is CircuitState.OPEN:
                breaker.open(transition.open_for)  # an operator action from a listener

        def on_rejected(self, breaker: CircuitBreaker) -> None:
            seen.append(breaker.metrics.rejections)

    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, listeners=[Reentrant()])

    def fallback() -> str:
        return str(breaker.execute(ok, fallback=lambda: "nested"))

    done = threading.Event()

    def run() -> None:
        breaker.execute(fail, fallback=fallback)
        breaker.execute(ok, fallback=fallback)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert done.is_set(), "deadlocked"
    assert breaker.state is CircuitState.OPEN
    assert "open" in seen


def test_removed_listener_hears_nothing(clock: ManualClock) -> None:
    heard: list[str] = []

    class L:
        def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
            heard.append("s")

    listener = L()
    breaker = CircuitBreaker("c", clock=clock)
    breaker.add_listener(listener)
    breaker.execute(ok)
    breaker.remove_listener(listener)
    breaker.execute(ok)
    assert heard == ["s"]


# -- registry --------------------------------------------------------------------


def test_registry_keeps_the_first_config_and_warns(clock: ManualClock) -> None:
    registry = CircuitBreakerRegistry(clock=clock)
    first = registry.get_breaker("svc", failure_threshold=2, timeout=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get_breaker("svc") is first  # no options: no warning
        assert registry.get_breaker("svc", failure_threshold=2, timeout=5) is first
    with pytest.warns(Warning):
        again = registry.get_breaker("svc", failure_threshold=9)
    assert again is first
    assert first.config.failure_threshold == 2


def test_registry_shared_mismatch_raises(clock: ManualClock) -> None:
    registry = CircuitBreakerRegistry(clock=clock)
    registry.get_breaker("local")
    with pytest.raises(ValueError):
        registry.get_breaker("local", shared=True)
    assert registry.get_breaker("local", shared=False) is registry.get_breaker("local")


def test_registry_health_reset_and_remove(clock: ManualClock) -> None:
    registry = CircuitBreakerRegistry(clock=clock)
    names = ["it's", 'a "quoted"', "ünïcödé-🔥", "x" * 200, ""]
    for name in names:
        breaker = registry.get_breaker(name, failure_threshold=1)
        with pytest.raises(Boom):
            breaker.execute(fail)
    health = registry.get_all_health()
    assert set(health) == set(names)
    assert all(h["state"] == "open" for h in health.values())
    registry.reset_all()
    assert all(h["state"] == "closed" for h in registry.get_all_health().values())
    removed = registry.remove(names[0])
    assert removed is not None
    assert names[0] not in registry.get_all_health()
    assert registry.get_breaker(names[0]) is not removed


def test_registry_creates_one_breaker_under_a_race() -> None:
    registry = CircuitBreakerRegistry()
    barrier = threading.Barrier(32)
    got: list[CircuitBreaker] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait()
        breaker = registry.get_breaker("raced", failure_threshold=3)
        with lock:
            got.append(breaker)

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 32
    assert len({id(b) for b in got}) == 1
