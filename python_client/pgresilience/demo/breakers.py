"""Demo step: a flaky fake AI endpoint behind a circuit breaker.

The breaker opens after a few failures, the fallback answers at once while it
is open, and once the endpoint heals the breaker probes and closes again. The
breaker's state is shared through the database, so ``resilience.circuit_health()``
shows it too. Takes about a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from ..breakers import CircuitBreaker, CircuitOpenError
from ..breakers.shared import SharedCircuitStore
from ..breakers.status import status_lines


class FlakyAI:
    """Answers prompts, except while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def complete(self, prompt: str) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("503 Service Unavailable")
        return f"AI answer to {prompt!r}"


def run(dsn: str, say: Callable[[str], None]) -> None:
    ai = FlakyAI()
    with SharedCircuitStore(dsn, refresh_interval=0.2) as store:
        breaker = store.attach(CircuitBreaker("demo-ai-endpoint", failure_threshold=3, timeout=0.5))
        store.wait_connected(5)
        store.flush(5)

        def ask(prompt: str) -> str:
            return breaker.execute(ai.complete, prompt, fallback=lambda: "(cached answer)")

        say(f"healthy endpoint: {ask('hello')}")
        ai.down = True
        say("the endpoint goes down...")
        for i in range(3):
            say(f"  call {i + 1}: {ask('hello')}  [{breaker.state.value}]")
        before = ai.calls
        for _ in range(5):
            ask("hello")
        say(
            f"circuit open: 5 more calls answered by the fallback, "
            f"{ai.calls - before} reached the endpoint; {breaker.health()['message']}"
        )
        try:
            breaker.execute(ai.complete, "no fallback")
        except CircuitOpenError as error:
            say(f"without a fallback: CircuitOpenError, retry_after={error.retry_after:.2f}s")
        store.flush(5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for line in status_lines(conn):
                say(f"  db: {line}")
        ai.down = False
        say("the endpoint recovers; waiting out the open timeout (0.5 s)...")
        time.sleep(0.6)
        say(f"trial call: {ask('hello again')}  [{breaker.state.value}]")
        store.flush(5)
        say(f"health: {breaker.health()}")
