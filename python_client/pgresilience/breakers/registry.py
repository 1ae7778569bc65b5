"""Breakers by name: ``circuit_breaker_registry.get_breaker("gemini-api")``."""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from .breaker import CircuitBreaker
from .clock import Clock
from .config import CircuitBreakerConfig

if TYPE_CHECKING:
    from .shared import SharedCircuitStore

__all__ = ["CircuitBreakerRegistry", "circuit_breaker_registry"]


class CircuitBreakerRegistry:
    """One breaker per name, created on first use.

    ``default_config`` is the base every new breaker's options are applied
    to. ``shared_store`` (a ``SharedCircuitStore``) is used by breakers asked
    for with ``shared=True``.
    """

    def __init__(
        self,
        default_config: CircuitBreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        shared_store: SharedCircuitStore | None = None,
    ) -> None:
        self._default = default_config or CircuitBreakerConfig()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._store = shared_store

    def get_breaker(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        shared: bool | None = None,
        **options: Any,
    ) -> CircuitBreaker:
        """The breaker called ``name``; created from ``config``/``options`` the
        first time. Later calls return the same breaker; different options
        then are ignored with a warning.

        ``shared=True`` shares a new breaker's state through the registry's
        store; ``None`` (the default) means local when creating and "either"
        when the breaker exists. Asking for an existing breaker with the
        other ``shared`` value raises ``ValueError``: a local breaker never
        silently stands in for a shared one, nor the reverse.
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            base = config or self._default
            wanted = base.replace(**options) if options else base
            with self._lock:
                breaker = self._breakers.get(name)
                if breaker is None:
                    breaker = CircuitBreaker(name, wanted, clock=self._clock)
                    if shared:
                        self._shared_store().attach(breaker)
                    self._breakers[name] = breaker
                    return breaker
        if options or config is not None:
            requested = (config or breaker.config).replace(**options) if options else config
            if requested != breaker.config:
                warnings.warn(
                    f"circuit breaker {name!r} already exists with another configuration; "
                    "keeping the existing one",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if shared is not None and shared != (breaker.gate is not None):
            have = "shared" if breaker.gate is not None else "local"
            raise ValueError(
                f"circuit breaker {name!r} already exists as a {have} breaker; "
                f"asked for shared={shared}"
            )
        return breaker

    def _shared_store(self) -> SharedCircuitStore:
        if self._store is None:
            raise RuntimeError(
                "shared=True needs a store: registry.use_shared_store(SharedCircuitStore(dsn))"
            )
        return self._store

    def use_shared_store(self, store: SharedCircuitStore | None) -> None:
        """Breakers asked for with ``shared=True`` from now on share through ``store``."""
        self._store = store

    def get(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def remove(self, name: str) -> CircuitBreaker | None:
        """Forget the breaker ``name`` (returned); a shared one also leaves its
        store, which no longer refreshes or publishes it."""
        with self._lock:
            breaker = self._breakers.pop(name, None)
        if breaker is not None and breaker.gate is not None:
            breaker.gate.detach(breaker)
        return breaker

    def names(self) -> list[str]:
        return sorted(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def get_all_health(self) -> dict[str, dict[str, Any]]:
        """``{name: breaker.health()}`` for every breaker."""
        return {name: breaker.health() for name, breaker in sorted(self._breakers.items())}

    def reset_all(self) -> None:
        for breaker in list(self._breakers.values()):
            breaker.reset()

    def clear(self) -> None:
        """Forget every breaker (tests)."""
        with self._lock:
            self._breakers.clear()


#: The process-wide registry.
circuit_breaker_registry = CircuitBreakerRegistry()
