"""Circuit breakers for calls to flaky services, sync and async, with optional
state shared across processes through PostgreSQL (``resilience.circuits``)."""

from .breaker import CircuitBreaker, CircuitGate, CircuitMetrics
from .clock import ManualClock
from .config import CircuitBreakerConfig, retry_after_from_error
from .core import Transition
from .errors import CircuitOpenError
from .listeners import CircuitBreakerListener
from .registry import CircuitBreakerRegistry, circuit_breaker_registry
from .state import CircuitState

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerListener",
    "CircuitBreakerRegistry",
    "CircuitGate",
    "CircuitMetrics",
    "CircuitOpenError",
    "CircuitState",
    "ManualClock",
    "Transition",
    "circuit_breaker_registry",
    "retry_after_from_error",
]
