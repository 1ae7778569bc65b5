"""Circuit breaker overhead, side by side in one run: pgresilience vs
pybreaker vs circuitbreaker.

Measures (1) the extra time a successful call pays in CLOSED and (2) the cost
of a rejected call in OPEN, and prints ratios. In-process only: no database
is involved, so no DSN is needed.

    python bench/breaker_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import circuitbreaker
import pybreaker

from pgresilience.breakers import CircuitBreaker, CircuitOpenError


def work() -> int:
    return 1


def fails() -> int:
    raise ConnectionError("down")


def per_call_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of ``number`` calls, in ns per call."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e9


def closed_candidates() -> dict[str, Callable[[], Any]]:
    ours = CircuitBreaker("bench")
    py = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60)
    decorated_ours = ours(work)
    decorated_cb = cb.decorate(work)
    return {
        "pgresilience execute": lambda: ours.execute(work),
        "pgresilience decorator": decorated_ours,
        "pybreaker call": lambda: py.call(work),
        "circuitbreaker decorator": decorated_cb,
    }


def open_candidates() -> dict[str, Callable[[], Any]]:
    ours = CircuitBreaker("bench-open", failure_threshold=1, timeout=3600)
    try:
        ours.execute(fails)
    except ConnectionError:
        pass
    py = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    try:
        py.call(fails)
    except (ConnectionError, pybreaker.CircuitBreakerError):
        pass
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600)
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
        "pgresilience (raises)": ours_reject,
        "pgresilience (fallback)": ours_fallback,
        "pybreaker (raises)": py_reject,
        "circuitbreaker (raises)": cb_reject,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    number, repeat = (20_000, 3) if args.quick else (200_000, 7)

    bare = per_call_ns(work, number, repeat)
    print(f"bare call: {bare:.0f} ns ({number} calls x {repeat} runs, median)")
    print("\nCLOSED: overhead per successful call (breaker call - bare call)")
    closed = {
        name: per_call_ns(fn, number, repeat) - bare for name, fn in closed_candidates().items()
    }
    ours = closed["pgresilience execute"]
    for name, ns in closed.items():
        print(f"  {name:28s} {ns:8.0f} ns   x{ns / ours:5.2f} of pgresilience")
    print(f"  pybreaker / pgresilience overhead ratio: {closed['pybreaker call'] / ours:.2f}")

    print("\nOPEN: cost of a rejected call")
    opened = {name: per_call_ns(fn, number, repeat) for name, fn in open_candidates().items()}
    ours_open = opened["pgresilience (raises)"]
    for name, ns in opened.items():
        print(f"  {name:28s} {ns:8.0f} ns   x{ns / ours_open:5.2f} of pgresilience")
    ratio = opened["pybreaker (raises)"] / ours_open
    print(f"  pybreaker / pgresilience rejection ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
