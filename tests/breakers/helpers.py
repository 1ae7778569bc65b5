"""Small tools shared by the breaker tests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from pgresilience.breakers import CircuitBreaker, ManualClock, Transition


class Boom(Exception):
    """The flaky service failed."""


def fail() -> None:
    raise Boom("service down")


def ok() -> str:
    return "ok"


def make(clock: ManualClock | None = None, **options: Any) -> tuple[CircuitBreaker, ManualClock]:
    clock = clock or ManualClock()
    return CircuitBreaker("test", clock=clock, **options), clock


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        try:
            breaker.execute(fail)
        except Boom:
            pass


class Recorder:
    """A listener that remembers everything it hears."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.successes = 0
        self.failures: list[BaseException | None] = []
        self.rejections = 0

    def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
        self.transitions.append(transition)

    def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
        self.successes += 1

    def on_failure(
        self, breaker: CircuitBreaker, error: BaseException | None, duration: float
    ) -> None:
        self.failures.append(error)

    def on_rejected(self, breaker: CircuitBreaker) -> None:
        self.rejections += 1

    @property
    def path(self) -> list[str]:
        return [t.new.value for t in self.transitions]


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper
