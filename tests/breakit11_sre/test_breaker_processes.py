"""Shared breakers in forked workers while the database is slow: the
circuit's row is held by an admin's open transaction."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgresilience.breakers import CircuitBreaker, CircuitState
from pgresilience.breakers.shared import SharedCircuitStore

from .conftest import Holder, wait_for
from .test_fork import _collect, _fork


def test_workers_trip_while_the_row_is_locked_and_agree_after(
    dsn: str, holders: list[Holder]
) -> None:
    """Parent and two workers forked after the store attached trip one
    shared circuit while its row is locked: every call returns the fallback
    at once (no call waits for the lock), the stores stay available, and
    once the lock goes the row says open and every process is open."""
    store = SharedCircuitStore(dsn, refresh_interval=0.1, request_timeout=0.4)
    breaker = store.attach(CircuitBreaker("slow-api", failure_threshold=2, timeout=30))
    try:
        assert store.wait_connected(5)
        breaker.force_open()
        assert store.flush(5)
        breaker.reset()
        assert store.flush(5)
        holders.append(Holder(dsn, "select * from resilience.circuits for update"))

        def trip() -> dict[str, Any]:
            store.wait_connected(5)
            slowest = 0.0
            for _ in range(5):
                started = time.monotonic()
                value = breaker.execute(_fail, fallback=lambda: "cached")
                slowest = max(slowest, time.monotonic() - started)
                assert value == "cached"
            return {"slowest": slowest, "state": breaker.state.value, "up": store.available}

        children = [_fork(trip) for _ in range(2)]
        mine = trip()
        time.sleep(0.5)  # lock waits come and go meanwhile
        assert store.available
        holders[0].release()
        reports = [mine] + [_collect(pid, read) for pid, read in children]
        assert all(r["slowest"] < 0.1 and r["state"] == "open" for r in reports), reports
        wait_for(lambda: store.flush(1), 5)  # the kept transition, at a refresh
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("select state from resilience.circuits").fetchone()
        assert row == ("open",)
        assert breaker.state is CircuitState.OPEN
    finally:
        store.close()


def _fail() -> str:
    raise ConnectionError("503 Service Unavailable")
