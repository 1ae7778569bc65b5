"""Circuit breaker overhead, side by side in one run: pgresilience vs
pybreaker vs circuitbreaker.

Three paths, each a group of variants measured in the same round, in an
order that rotates from round to round (so drift in machine load hits every
variant alike):

* sync CLOSED: the extra time a successful call pays (variant - bare call);
* async CLOSED: the same for coroutines (circuitbreaker's async decorator;
  pybreaker's async support needs tornado and is left out);
* OPEN: the whole cost of a rejected call that raises (and ours with a
  fallback, for reference).

Each round runs every variant ``--calls`` times and takes wall time and this
thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``). Ratios are computed
within a round, then summarised over ``--rounds`` rounds (after one warm-up
round) as median [min-max]. In-process only: no database, no DSN.

    python bench/breaker_overhead.py [--quick] [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import circuitbreaker
import pybreaker

from pgresilience.breakers import CircuitBreaker, CircuitOpenError

Variant = Callable[[int], tuple[float, float]]  # calls -> (wall ns, cpu ns) per call


def cpu_ns() -> int:
    """This thread's CPU time. Not /proc/.../schedstat: the kernel updates
    that at scheduler ticks, too coarse for a round of a few milliseconds;
    CLOCK_THREAD_CPUTIME_ID brings the same figure up to date when read."""
    return time.thread_time_ns()


def timed_sync(fn: Callable[[], Any]) -> Variant:
    def run(calls: int) -> tuple[float, float]:
        cpu0, wall0 = cpu_ns(), time.perf_counter_ns()
        for _ in range(calls):
            fn()
        wall, cpu = time.perf_counter_ns() - wall0, cpu_ns() - cpu0
        return wall / calls, cpu / calls

    return run


def timed_async(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[Any]]) -> Variant:
    async def body(calls: int) -> tuple[float, float]:
        cpu0, wall0 = cpu_ns(), time.perf_counter_ns()
        for _ in range(calls):
            await fn()
        wall, cpu = time.perf_counter_ns() - wall0, cpu_ns() - cpu0
        return wall / calls, cpu / calls

    return lambda calls: loop.run_until_complete(body(calls))


# -- the protected calls ------------------------------------------------------------------


def work() -> int:
    return 1


async def work_async() -> int:
    return 1


def fails() -> int:
    raise ConnectionError("down")


def sync_closed() -> dict[str, Variant]:
    ours = CircuitBreaker("bench")
    py = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60, name="sync")
    decorated_ours = ours(work)
    decorated_cb = cb.decorate(work)
    return {
        "bare call": timed_sync(work),
        "pgresilience execute": timed_sync(lambda: ours.execute(work)),
        "pgresilience decorator": timed_sync(decorated_ours),
        "pybreaker call": timed_sync(lambda: py.call(work)),
        "circuitbreaker decorator": timed_sync(decorated_cb),
    }


def async_closed(loop: asyncio.AbstractEventLoop) -> dict[str, Variant]:
    ours = CircuitBreaker("bench-async")
    cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60, name="async")
    decorated_ours = ours(work_async)
    decorated_cb = cb.decorate(work_async)
    return {
        "bare await": timed_async(loop, work_async),
        "pgresilience decorator": timed_async(loop, decorated_ours),
        "pgresilience execute_async": timed_async(loop, lambda: ours.execute_async(work_async)),
        "circuitbreaker decorator": timed_async(loop, decorated_cb),
    }


def open_path() -> dict[str, Variant]:
    ours = CircuitBreaker("bench-open", failure_threshold=1, timeout=3600)
    try:
        ours.execute(fails)
    except ConnectionError:
        pass
    decorated_ours = ours(work)
    py = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    try:
        py.call(fails)
    except (ConnectionError, pybreaker.CircuitBreakerError):
        pass
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name="open")
    decorated_cb = cb.decorate(fails)
    try:
        decorated_cb()
    except ConnectionError:
        pass

    def ours_reject() -> None:
        try:
            ours.execute(work)
        except CircuitOpenError:
            pass

    def ours_decorated_reject() -> None:
        try:
            decorated_ours()
        except CircuitOpenError:
            pass

    def ours_fallback() -> None:
        ours.execute(work, fallback=int)

    def py_reject() -> None:
        try:
            py.call(work)
        except pybreaker.CircuitBreakerError:
            pass

    def cb_reject() -> None:
        try:
            decorated_cb()
        except circuitbreaker.CircuitBreakerError:
            pass

    return {
        "pgresilience execute (raises)": timed_sync(ours_reject),
        "pgresilience decorator (raises)": timed_sync(ours_decorated_reject),
        "pgresilience (fallback)": timed_sync(ours_fallback),
        "pybreaker (raises)": timed_sync(py_reject),
        "circuitbreaker (raises)": timed_sync(cb_reject),
    }


# -- measuring ------------------------------------------------------------------------------


def measure(
    variants: dict[str, Variant], calls: int, rounds: int
) -> list[dict[str, tuple[float, float]]]:
    """One warm-up round, then ``rounds`` rounds; each round runs every
    variant once, starting one further along the list each time."""
    names = list(variants)
    results = []
    for number in range(rounds + 1):
        shift = number % len(names)
        measured = {name: variants[name](calls) for name in names[shift:] + names[:shift]}
        if number:
            results.append(measured)
    return results


def summary(values: list[float], unit: str = "") -> str:
    return (
        f"{statistics.median(values):7.2f}{unit} [{min(values):.2f}-{max(values):.2f}]"
        if unit == "x"
        else f"{statistics.median(values):7.0f} [{min(values):.0f}-{max(values):.0f}]"
    )


def report(
    title: str,
    names: list[str],
    rounds: list[dict[str, tuple[float, float]]],
    *,
    baseline: str | None,
    ratios: list[tuple[str, str, float]],
) -> None:
    """Per-variant ns per call (minus ``baseline`` if given), wall and CPU,
    and each (ours, theirs, target) ratio computed round by round."""
    print(f"\n{title}")
    print(f"  {'variant':34s} {'wall ns/call':>26s} {'cpu ns/call':>26s}")

    def cost(measured: dict[str, tuple[float, float]], name: str, which: int) -> float:
        value = measured[name][which]
        return value - measured[baseline][which] if baseline else value

    for name in names:
        if name == baseline:
            label = f"{name} (subtracted)"
            wall = [m[name][0] for m in rounds]
            cpu = [m[name][1] for m in rounds]
        else:
            label = name
            wall = [cost(m, name, 0) for m in rounds]
            cpu = [cost(m, name, 1) for m in rounds]
        print(f"  {label:34s} {summary(wall):>26s} {summary(cpu):>26s}")
    for ours, theirs, target in ratios:
        wall = [cost(m, ours, 0) / cost(m, theirs, 0) for m in rounds]
        cpu = [cost(m, ours, 1) / cost(m, theirs, 1) for m in rounds]
        verdict = "meets" if statistics.median(wall) <= target else "MISSES"
        print(
            f"  ratio {ours} / {theirs}: wall {summary(wall, 'x')}, cpu {summary(cpu, 'x')}"
            f"  (target <= {target}: {verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (>= 5)")
    parser.add_argument("--calls", type=int, default=None, help="calls per variant per round")
    args = parser.parse_args()
    calls = args.calls or (20_000 if args.quick else 200_000)
    rounds = max(5, args.rounds or (5 if args.quick else 7))
    print(f"{calls} calls per variant per round, {rounds} rounds after a warm-up round;")
    print("figures: median [min-max] over rounds")

    variants = sync_closed()
    report(
        "sync CLOSED: overhead per successful call (minus the bare call)",
        list(variants),
        measure(variants, calls, rounds),
        baseline="bare call",
        ratios=[
            ("pgresilience execute", "pybreaker call", 0.5),
            ("pgresilience decorator", "circuitbreaker decorator", 1.0),
        ],
    )
    loop = asyncio.new_event_loop()
    try:
        variants = async_closed(loop)
        report(
            "async CLOSED: overhead per successful await (minus the bare await)",
            list(variants),
            measure(variants, calls, rounds),
            baseline="bare await",
            ratios=[
                ("pgresilience decorator", "circuitbreaker decorator", 1.0),
                ("pgresilience execute_async", "circuitbreaker decorator", 1.0),
            ],
        )
    finally:
        loop.close()
    variants = open_path()
    report(
        "OPEN: whole cost of a rejected call (caller catches the error)",
        list(variants),
        measure(variants, calls, rounds),
        baseline=None,
        ratios=[
            ("pgresilience execute (raises)", "pybreaker (raises)", 0.8),
            ("pgresilience decorator (raises)", "pybreaker (raises)", 0.8),
        ],
    )


if __name__ == "__main__":
    main()
