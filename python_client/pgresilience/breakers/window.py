"""Sliding windows over recent call outcomes, O(1) per call.

Both keep running totals, so reading the failure rate never walks the window.
"""

from __future__ import annotations

import math

__all__ = ["CountWindow", "SlidingWindow", "TimeWindow"]

# Per-call outcome bits kept in a window slot.
FAILED = 1
SLOW = 2


class SlidingWindow:
    """Totals of the calls inside the window: ``calls``, ``failures``, ``slow``."""

    __slots__ = ("calls", "failures", "slow")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, now: float, outcome: int) -> None:
        """Add one call; ``outcome`` is a combination of FAILED and SLOW bits."""
        raise NotImplementedError

    def expire(self, now: float) -> None:
        """Drop what has left the window by ``now`` (time windows only)."""

    def reset(self) -> None:
        raise NotImplementedError

    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    def slow_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CountWindow(SlidingWindow):
    """The last ``size`` calls, in a ring buffer."""

    __slots__ = ("ring", "next", "size")

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.ring = bytearray(size)
        self.next = 0

    def record(self, now: float, outcome: int) -> None:
        index = self.next
        ring = self.ring
        if self.calls == self.size:
            evicted = ring[index]
            if evicted:
                self.failures -= evicted & FAILED
                self.slow -= evicted >> 1
        else:
            self.calls += 1
        ring[index] = outcome
        if outcome:
            self.failures += outcome & FAILED
            self.slow += outcome >> 1
        index += 1
        self.next = 0 if index == self.size else index

    def reset(self) -> None:
        self.calls = self.failures = self.slow = 0
        self.ring = bytearray(self.size)
        self.next = 0


class TimeWindow(SlidingWindow):
    """The calls of the last ``seconds`` seconds, in ``buckets`` time buckets.

    A bucket leaves the window whole, so the window covers between
    ``seconds * (buckets - 1) / buckets`` and ``seconds`` of history.
    """

    __slots__ = ("_width", "_count", "_calls", "_failures", "_slow", "_head")

    def __init__(self, seconds: float, buckets: int = 10) -> None:
        super().__init__()
        self._width = seconds / buckets
        self._count = buckets
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        self._slow = [0] * buckets
        # Number of the newest bucket (floor(now / width)); None: window empty.
        self._head: int | None = None

    def expire(self, now: float) -> None:
        tick = math.floor(now / self._width)
        head = self._head
        if head is None:
            self._head = tick
            return
        if tick <= head:
            return  # same bucket, or a clock that went backwards: keep counting in head
        # Clear every bucket between the old head and the new one.
        for number in range(head + 1, min(tick, head + self._count) + 1):
            slot = number % self._count
            self.calls -= self._calls[slot]
            self.failures -= self._failures[slot]
            self.slow -= self._slow[slot]
            self._calls[slot] = self._failures[slot] = self._slow[slot] = 0
        self._head = tick

    def record(self, now: float, outcome: int) -> None:
        self.expire(now)
        assert self._head is not None
        slot = self._head % self._count
        self._calls[slot] += 1
        self.calls += 1
        if outcome:
            failed = outcome & FAILED
            slow = outcome >> 1
            self._failures[slot] += failed
            self._slow[slot] += slow
            self.failures += failed
            self.slow += slow

    def reset(self) -> None:
        self.calls = self.failures = self.slow = 0
        self._calls = [0] * self._count
        self._failures = [0] * self._count
        self._slow = [0] * self._count
        self._head = None
