"""The error a rejected call raises."""

from __future__ import annotations

from pgresilience.errors import PgResilienceError

from .state import CircuitState

__all__ = ["CircuitOpenError"]


class CircuitOpenError(PgResilienceError):
    """The circuit rejected the call without running it.

    ``retry_after`` is how many seconds until the circuit will admit a trial
    call (0.0 when a trial is due but all trial slots are taken; ``None`` when
    only ``reset()`` will let calls through again, as in ``FORCED_OPEN``).
    """

    def __init__(self, name: str, state: CircuitState, retry_after: float | None) -> None:
        # The message is built only when shown: rejections must be cheap.
        # Exception.__init__ directly: PgResilienceError's builds a message.
        Exception.__init__(self, name, state, retry_after)
        self.detail = {"name": name, "state": state.value, "retry_after": retry_after}
        self.name = name
        self.state = state
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.retry_after is None:
            return f"circuit {self.name!r} is {self.state.value}"
        return (
            f"circuit {self.name!r} is {self.state.value} - "
            f"retry in {self.retry_after * 1000:.0f}ms"
        )
