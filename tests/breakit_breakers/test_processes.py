"""Shared breakers in real worker processes (process_worker.py): each sees
a circuit opened elsewhere within the bound, asks at most one probe
question, and the database grants exactly one probe in all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from pgresilience.breakers import CircuitBreaker, CircuitState
from pgresilience.breakers.shared import SharedCircuitStore

WORKER = Path(__file__).with_name("process_worker.py")


def read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def test_worker_processes_see_the_open_circuit_and_share_one_probe(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    name = "ai 'shared' 🔥"
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), dsn, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        assert [read_line(w) for w in workers] == ["ready"] * 3
        with SharedCircuitStore(dsn) as store:
            breaker = CircuitBreaker(name, failure_threshold=1, timeout=1.0)
            store.attach(breaker)
            assert store.wait_connected(10)
            try:
                breaker.execute(lambda: 1 / 0)
            except ZeroDivisionError:
                pass
            assert breaker.state is CircuitState.OPEN
            store.flush()
            # readline is bounded by the worker's own 20 s limit.
            assert [read_line(w) for w in workers] == ["open"] * 3
            reports = [json.loads(read_line(w)) for w in workers]
        for w in workers:
            assert w.wait(30) == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
    assert [r["state"] for r in reports] == ["closed"] * 3
    assert all(r["questions"] <= 1 for r in reports), reports
    grants = conn.execute(
        "select count(*) from resilience.audit_log where event = 'circuit_state'"
        " and detail->>'circuit' = %s and detail->>'to' = 'half_open'",
        (name,),
    ).fetchone()
    assert grants == (1,)
