"""Semantics added in v2: streams, DISABLED, hung trials, operator actions,
``with`` blocks, METRICS_ONLY, last_failure, and the registry's ``shared=``."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from pgresilience.breakers import (
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    ManualClock,
)
from pgresilience.breakers.shared import SharedCircuitStore

from .helpers import Boom, Recorder, make, ok, run_async, trip

# -- generators: a stream is one call ---------------------------------------------------


def test_an_error_while_iterating_a_generator_is_a_failure() -> None:
    breaker, _ = make(failure_threshold=1)

    @breaker
    def stream() -> Iterator[str]:
        yield "first token"
        raise Boom("connection reset mid-stream")

    tokens = stream()
    assert breaker.metrics.calls == 0  # nothing runs before iteration
    assert next(tokens) == "first token"
    with pytest.raises(Boom):
        next(tokens)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failures == 1
    with pytest.raises(CircuitOpenError):  # rejected at the first item
        next(stream())


def test_an_exhausted_generator_is_a_success_and_keeps_its_return_value() -> None:
    breaker, _ = make(failure_threshold=1)

    @breaker
    def stream() -> Iterator[int]:
        yield 1
        yield 2
        return 3  # noqa: B901  (a generator's return value travels with StopIteration)

    def consume() -> int:
        return (yield from stream())

    gen = consume()
    assert list(gen) == [1, 2]
    m = breaker.metrics
    assert (m.successes, m.failures, m.ignored) == (1, 0, 0)


def test_an_abandoned_generator_is_neutral_and_gives_its_trial_slot_back() -> None:
    breaker, clock = make(failure_threshold=1, timeout=5.0)
    trip(breaker, 1)
    clock.advance(5)

    @breaker
    def stream() -> Iterator[int]:
        yield from range(10)

    tokens = stream()
    assert next(tokens) == 0  # this stream holds the one trial slot
    with pytest.raises(CircuitOpenError):
        breaker.execute(ok)
    del tokens
    gc.collect()  # the consumer dropped it: closed, neither success nor failure
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.ignored == 1
    assert list(stream()) == list(range(10))  # the slot is free again
    assert breaker.state is CircuitState.CLOSED


def test_a_generator_fallback_answers_a_rejection_and_an_early_failure_only() -> None:
    breaker, _ = make(failure_threshold=2)
    calls: list[str] = []

    @breaker(fallback=lambda prompt: iter([f"cached {prompt}"]))
    def stream(prompt: str) -> Iterator[str]:
        calls.append(prompt)
        if prompt == "late":
            yield "partial"
        raise Boom(prompt)

    assert list(stream("early")) == ["cached early"]  # failed before any item
    late = stream("late")
    assert next(late) == "partial"
    with pytest.raises(Boom):  # never a mix of real and cached items
        next(late)
    assert breaker.state is CircuitState.OPEN
    assert list(stream("rejected")) == ["cached rejected"]
    assert calls == ["early", "late"]


def test_a_generator_counts_only_its_own_time_as_slow() -> None:
    breaker, clock = make(failure_threshold=None, slow_call_duration=1.0, window_size=1)

    @breaker
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    for _ in stream():
        clock.advance(5)  # the consumer is slow, not the service
    assert breaker.metrics.slow_calls == 0
    assert breaker.state is CircuitState.CLOSED


def test_values_sent_and_errors_thrown_into_a_generator_reach_it() -> None:
    breaker, _ = make(failure_threshold=5)

    @breaker
    def echo() -> Iterator[str]:
        got = yield "ready"
        try:
            yield f"got {got}"
        except KeyError:
            yield "handled"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    assert gen.throw(KeyError("k")) == "handled"
    gen.close()
    assert breaker.metrics.ignored == 1


@run_async
async def test_async_generators_are_protected_the_same_way() -> None:
    breaker, clock = make(failure_threshold=1, timeout=5.0)

    @breaker
    async def stream(fail: bool) -> AsyncIterator[str]:
        yield "token"
        await asyncio.sleep(0)
        if fail:
            raise Boom("stream broke")

    assert [t async for t in stream(False)] == ["token"]
    assert breaker.metrics.successes == 1
    with pytest.raises(Boom):
        async for _ in stream(True):
            pass
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        async for _ in stream(False):
            pass
    clock.advance(5)
    abandoned = stream(False)
    assert await abandoned.__anext__() == "token"  # holds the trial slot
    await abandoned.aclose()
    assert breaker.metrics.ignored == 1
    assert breaker.state is CircuitState.HALF_OPEN
    assert [t async for t in stream(False)] == ["token"]
    assert breaker.state is CircuitState.CLOSED


@run_async
async def test_call_timeout_bounds_the_wait_for_each_item_of_an_async_stream() -> None:
    breaker, _ = make(failure_threshold=1, call_timeout=0.05)

    @breaker
    async def stalls() -> AsyncIterator[str]:
        yield "first"
        await asyncio.Event().wait()
        yield "never"

    with pytest.raises(TimeoutError):
        async for _ in stalls():
            pass
    assert breaker.state is CircuitState.OPEN


# -- DISABLED records nothing -------------------------------------------------------------


def test_disabled_records_nothing_and_tells_no_listener() -> None:
    recorder = Recorder()
    breaker, _ = make(failure_threshold=1, listeners=[recorder])
    breaker.disable()
    seen = len(recorder.transitions)
    trip(breaker, 5)
    assert breaker.execute(ok) == "ok"
    m = breaker.metrics
    assert (m.calls, m.failures, m.successes, m.window_calls) == (0, 0, 0, 0)
    assert recorder.failures == [] and recorder.successes == 0
    assert len(recorder.transitions) == seen
    assert breaker.health()["last_failure"] is None
    # A fallback still answers a failure: DISABLED removes the breaker, not
    # the caller's error handling.
    assert breaker.execute(lambda: 1 / 0, fallback=lambda: "cached") == "cached"


@pytest.mark.parametrize("fails", [True, False])
def test_a_call_admitted_before_disable_is_not_recorded_when_it_ends(fails: bool) -> None:
    breaker, _ = make(failure_threshold=1)
    release = threading.Event()
    started = threading.Event()
    ended: list[str] = []

    def slow_call() -> None:
        started.set()
        release.wait(10)
        if fails:
            raise Boom("late")

    def run() -> None:
        try:
            breaker.execute(slow_call)  # admitted on the CLOSED hot path
            ended.append("ok")
        except Boom:
            ended.append("failed")

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(10)
    breaker.disable()
    release.set()
    thread.join(10)
    assert ended == ["failed" if fails else "ok"]
    assert breaker.metrics.calls == 0
    assert breaker.state is CircuitState.DISABLED


# -- max_wait_in_half_open ------------------------------------------------------------------


def test_a_hung_trial_is_a_failed_trial_after_max_wait_in_half_open() -> None:
    recorder = Recorder()
    breaker, clock = make(
        failure_threshold=1, timeout=5.0, max_wait_in_half_open=30.0, listeners=[recorder]
    )
    trip(breaker, 1)
    clock.advance(5)
    release = threading.Event()
    started = threading.Event()

    def hangs() -> str:
        started.set()
        release.wait(10)
        return "late"

    trial = threading.Thread(target=breaker.execute, args=(hangs,))
    trial.start()
    started.wait(10)
    with pytest.raises(CircuitOpenError):
        breaker.execute(ok)  # the slot is taken
    clock.advance(30)
    assert breaker.state is CircuitState.OPEN  # the hung trial counted as failed
    assert recorder.transitions[-1].reason == "trial call still running after 30s"
    assert breaker.metrics.failures == 1  # lifetime counters: only real outcomes
    clock.advance(5)
    assert breaker.execute(ok) == "ok"  # a new trial got the slot
    assert breaker.state is CircuitState.CLOSED
    release.set()
    trial.join(10)
    # The hung call's late success is history: it neither closes nor opens.
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.successes == 2


def test_without_max_wait_a_hung_trial_keeps_the_slot() -> None:
    breaker, clock = make(failure_threshold=1, timeout=5.0)
    trip(breaker, 1)
    clock.advance(5)
    permit = breaker.core.acquire(clock())  # a trial that never ends
    assert permit >= 0
    clock.advance(10**6)
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.execute(ok)


# -- operator actions -----------------------------------------------------------------------


def test_open_for_a_duration_then_trials_as_after_a_trip() -> None:
    recorder = Recorder()
    breaker, clock = make(timeout=60.0, listeners=[recorder])
    breaker.open(5)
    assert recorder.transitions[-1].manual is True
    with pytest.raises(CircuitOpenError) as info:
        breaker.execute(ok)
    assert info.value.retry_after == 5
    clock.advance(5)
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    breaker.open()  # no duration: the configured open time
    assert breaker.retry_after == 60
    with pytest.raises(ValueError):
        breaker.open(-1)


def test_half_open_lets_the_next_trials_decide() -> None:
    recorder = Recorder()
    breaker, _ = make(failure_threshold=1, timeout=3600.0, listeners=[recorder])
    trip(breaker, 1)
    breaker.half_open()
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    # An episode an operator started ends as an operator action too.
    assert [(t.new.value, t.manual) for t in recorder.transitions[-2:]] == [
        ("half_open", True),
        ("closed", True),
    ]
    breaker.half_open()
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN


# -- with / async with ------------------------------------------------------------------------


def test_a_with_block_is_one_call() -> None:
    breaker, _ = make(failure_threshold=2)
    with breaker:
        pass
    for _ in range(2):
        with pytest.raises(Boom), breaker:
            raise Boom("in the block")
    assert breaker.state is CircuitState.OPEN
    ran = []
    with pytest.raises(CircuitOpenError), breaker:
        ran.append("body")
    assert ran == []
    m = breaker.metrics
    assert (m.successes, m.failures, m.rejections) == (1, 2, 1)


def test_with_blocks_nest_and_keep_their_own_permits() -> None:
    breaker, _ = make(failure_threshold=5)
    with breaker, breaker:
        pass
    with pytest.raises(Boom), breaker:
        with breaker:
            pass
        raise Boom("outer")
    m = breaker.metrics
    assert (m.successes, m.failures) == (3, 1)


@run_async
async def test_async_with_blocks_in_concurrent_tasks() -> None:
    breaker, clock = make(failure_threshold=1, timeout=5.0)
    gate = asyncio.Event()

    async def task(fail: bool) -> None:
        async with breaker:
            await gate.wait()
            if fail:
                raise Boom("task")

    ok_task = asyncio.create_task(task(False))
    bad_task = asyncio.create_task(task(True))
    await asyncio.sleep(0)
    gate.set()
    await ok_task
    with pytest.raises(Boom):
        await bad_task
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        async with breaker:
            pass
    clock.advance(5)
    async with breaker:
        pass
    assert breaker.state is CircuitState.CLOSED


# -- METRICS_ONLY ----------------------------------------------------------------------------


def test_metrics_only_records_and_reports_but_never_rejects() -> None:
    recorder = Recorder()
    breaker, _ = make(
        failure_threshold=2,
        failure_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
        listeners=[recorder],
    )
    breaker.metrics_only()
    trip(breaker, 10)
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.METRICS_ONLY
    m = breaker.metrics
    assert (m.failures, m.successes, m.rejections) == (10, 1, 0)
    assert m.failure_rate == 0.75
    assert len(recorder.failures) == 10
    health = breaker.health()
    assert health["healthy"] is True
    assert "would have opened" in health["message"]
    assert health["last_failure"]["error"] == "Boom: service down"
    assert [t.new for t in recorder.transitions] == [CircuitState.METRICS_ONLY]
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    trip(breaker, 2)
    assert breaker.state is CircuitState.OPEN


# -- the registry's shared= -------------------------------------------------------------------


def test_asking_for_an_existing_breaker_with_the_other_shared_value_raises() -> None:
    # Nothing listens on port 1: the store never connects (and need not).
    store = SharedCircuitStore("host=127.0.0.1 port=1 dbname=none", retry_interval=60)
    registry = CircuitBreakerRegistry(clock=ManualClock(), shared_store=store)
    try:
        local = registry.get_breaker("local")
        with pytest.raises(ValueError):
            registry.get_breaker("local", shared=True)
        assert local.gate is None  # not attached behind the caller's back
        shared = registry.get_breaker("shared", shared=True)
        with pytest.raises(ValueError):
            registry.get_breaker("shared", shared=False)
        # Not saying is fine either way.
        assert registry.get_breaker("shared") is shared
        assert registry.get_breaker("local") is local
        assert registry.get_breaker("local", shared=False) is local
    finally:
        store.close()


def test_fail_fast_rejections_are_counted_exactly_under_threads() -> None:
    breaker, _ = make(failure_threshold=1, timeout=3600.0)
    trip(breaker, 1)
    decorated = breaker(ok)

    def hammer() -> None:
        for i in range(2000):
            try:
                breaker.execute(ok) if i % 2 else decorated()
            except CircuitOpenError:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert breaker.metrics.rejections == 16000
