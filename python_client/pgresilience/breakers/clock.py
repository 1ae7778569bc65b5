"""Clocks. A breaker reads time only through a zero-argument callable
returning seconds (``time.monotonic`` by default), so tests and demos can
drive it with ``ManualClock`` instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(60)``."""

    __slots__ = ("_now", "_lock")

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += seconds
            return self._now
