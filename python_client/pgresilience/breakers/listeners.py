"""Listeners: hooks called after the fact, outside the breaker's lock.

Subclass ``CircuitBreakerListener`` and override what you need, or pass any
object with some of these methods. A listener that raises is logged and
otherwise ignored: observing a call never breaks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core import Transition

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["CircuitBreakerListener", "ListenerSet"]

log = logging.getLogger("pgresilience.breakers")

EVENTS = ("on_state_change", "on_success", "on_failure", "on_rejected")


class CircuitBreakerListener:
    def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
        """The circuit moved: ``transition.old`` -> ``transition.new`` (``.reason``)."""

    def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
        """A call succeeded (took ``duration`` seconds)."""

    def on_failure(
        self, breaker: CircuitBreaker, error: BaseException | None, duration: float
    ) -> None:
        """A call failed; ``error`` is None when ``record_result`` rejected its value."""

    def on_rejected(self, breaker: CircuitBreaker) -> None:
        """A call was rejected without running."""


class ListenerSet:
    """Per-event tuples of bound methods: an empty tuple costs one truth test."""

    __slots__ = ("listeners", *EVENTS)

    on_state_change: tuple[Callable[..., Any], ...]
    on_success: tuple[Callable[..., Any], ...]
    on_failure: tuple[Callable[..., Any], ...]
    on_rejected: tuple[Callable[..., Any], ...]

    def __init__(self) -> None:
        self.listeners: tuple[object, ...] = ()
        self._rebuild()

    def add(self, listener: object) -> None:
        if not any(callable(getattr(listener, event, None)) for event in EVENTS):
            raise TypeError(f"{listener!r} has none of {', '.join(EVENTS)}")
        self.listeners = (*self.listeners, listener)
        self._rebuild()

    def remove(self, listener: object) -> None:
        self.listeners = tuple(item for item in self.listeners if item is not listener)
        self._rebuild()

    def _rebuild(self) -> None:
        for event in EVENTS:
            hooks = tuple(
                hook
                for listener in self.listeners
                if callable(hook := getattr(listener, event, None))
                # A base-class no-op is not worth calling.
                and getattr(type(listener), event, None)
                is not getattr(CircuitBreakerListener, event)
            )
            setattr(self, event, hooks)

    @staticmethod
    def fire(hooks: tuple[Callable[..., Any], ...], *args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                log.exception("circuit breaker listener %r failed", hook)
