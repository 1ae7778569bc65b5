"""The registry keeps one breaker per name."""

from __future__ import annotations

import pytest

from pgresilience.breakers import (
    CircuitBreakerConfig,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    ManualClock,
    circuit_breaker_registry,
)

from .helpers import trip


def test_the_same_name_gives_the_same_breaker() -> None:
    registry = CircuitBreakerRegistry()
    first = registry.get_breaker("gemini-api", failure_threshold=3, timeout=30.0)
    assert registry.get_breaker("gemini-api") is first
    assert first.config.failure_threshold == 3
    assert registry.get_breaker("other") is not first
    assert registry.names() == ["gemini-api", "other"]
    assert "gemini-api" in registry and len(registry) == 2


def test_asking_again_with_other_options_keeps_the_first_and_warns() -> None:
    registry = CircuitBreakerRegistry()
    first = registry.get_breaker("api", failure_threshold=3)
    with pytest.warns(RuntimeWarning):
        again = registry.get_breaker("api", failure_threshold=9)
    assert again is first and first.config.failure_threshold == 3


def test_default_config_and_clock_apply_to_new_breakers() -> None:
    clock = ManualClock()
    registry = CircuitBreakerRegistry(CircuitBreakerConfig(failure_threshold=1), clock=clock)
    breaker = registry.get_breaker("api", timeout=5.0)
    trip(breaker, 1)
    with pytest.raises(CircuitOpenError):
        breaker.execute(int)
    clock.advance(5)
    assert breaker.state is CircuitState.HALF_OPEN


def test_get_all_health_and_reset_all() -> None:
    registry = CircuitBreakerRegistry(clock=ManualClock())
    trip(registry.get_breaker("down", failure_threshold=1, timeout=2.0), 1)
    registry.get_breaker("up")
    health = registry.get_all_health()
    assert health["up"]["healthy"] is True
    assert health["up"]["last_failure"] is None
    last_failure = health["down"].pop("last_failure")
    assert health["down"] == {
        "healthy": False,
        "state": "open",
        "failure_rate": 1.0,
        "message": "Circuit open - retry in 2000ms",
    }
    assert last_failure["error"] == "Boom: service down"
    assert last_failure["at"].endswith("+00:00")
    registry.reset_all()
    assert all(h["state"] == "closed" for h in registry.get_all_health().values())


def test_shared_breakers_need_a_shared_store() -> None:
    with pytest.raises(RuntimeError):
        CircuitBreakerRegistry().get_breaker("api", shared=True)


def test_the_process_wide_registry() -> None:
    breaker = circuit_breaker_registry.get_breaker("test-registry-process-wide")
    try:
        assert circuit_breaker_registry.get_breaker("test-registry-process-wide") is breaker
        assert "test-registry-process-wide" in circuit_breaker_registry.get_all_health()
    finally:
        circuit_breaker_registry.remove("test-registry-process-wide")
