"""Shared circuit state through resilience.circuits, against a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience.breakers import CircuitBreaker, CircuitOpenError, CircuitState, ManualClock
from pgresilience.breakers.shared import SharedCircuitStore

from .helpers import fail, ok, trip

WORKER = Path(__file__).with_name("shared_worker.py")


def publish(
    conn: psycopg.Connection[Any],
    name: str,
    state: str,
    seconds: float = 0.0,
    owner: str = "tester",
    forced: bool = False,
) -> dict[str, Any]:
    row = conn.execute(
        "select resilience._circuit_publish(%s, %s, %s, 'test', %s, null, %s)",
        (name, state, seconds, owner, forced),
    ).fetchone()
    assert row is not None
    return dict(row[0])


def probe(
    conn: psycopg.Connection[Any], name: str, owner: str, lease: float = 30.0
) -> dict[str, Any]:
    row = conn.execute(
        "select resilience._circuit_probe(%s, %s, %s)", (name, owner, lease)
    ).fetchone()
    assert row is not None
    return dict(row[0])


def eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    """Poll ``check`` until it holds (a bound on waiting, not a timing claim)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- the SQL functions ------------------------------------------------------------------


def test_an_open_transition_is_stored_audited_announced_and_shown_in_health(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_circuits")
        row = publish(conn, "ai", "open", 30.0)
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert row["state"] == "open" and 29 < row["open_for"] <= 30
    assert json.loads(notices[0].payload)["state"] == "open"
    (health,) = [r[0] for r in conn.execute("select resilience.circuit_health()")]
    assert health["name"] == "ai" and health["healthy"] is False
    assert health["message"].startswith("Circuit open - retry in ")
    audit = conn.execute(
        "select detail from resilience.audit_log where event = 'circuit_state'"
    ).fetchall()
    assert [(a[0]["from"], a[0]["to"]) for a in audit] == [("closed", "open")]


def test_exactly_one_of_many_concurrent_probers_gets_the_lease(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    publish(conn, "ai", "open", 0.0)  # open, deadline already reached
    barrier = threading.Barrier(8)
    answers: list[bool] = []

    def ask(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            barrier.wait(10)
            answers.append(probe(own, "ai", f"worker-{i}")["granted"])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(answers) == [False] * 7 + [True]


def test_no_probe_before_the_deadline_and_a_new_one_after_the_lease_expires(
    conn: psycopg.Connection[Any],
) -> None:
    publish(conn, "ai", "open", 3600.0)
    assert probe(conn, "ai", "a")["granted"] is False
    conn.execute("update resilience.circuits set open_until = now() - interval '1 s'")
    assert probe(conn, "ai", "a")["granted"] is True
    assert probe(conn, "ai", "b")["granted"] is False  # a holds the lease
    # a's process died: once its lease has run out, b may probe.
    conn.execute("update resilience.circuits set probe_lease_until = now() - interval '1 s'")
    assert probe(conn, "ai", "b")["granted"] is True


def test_only_the_prober_closes_the_circuit(conn: psycopg.Connection[Any]) -> None:
    publish(conn, "ai", "open", 0.0)
    assert probe(conn, "ai", "prober")["granted"] is True
    assert publish(conn, "ai", "closed", owner="bystander")["state"] == "half_open"
    assert publish(conn, "ai", "closed", owner="prober")["state"] == "closed"
    # An operator reset (forced) always wins.
    publish(conn, "ai", "forced_open", forced=True)
    assert publish(conn, "ai", "open", 10.0)["state"] == "forced_open"
    assert publish(conn, "ai", "closed", forced=True)["state"] == "closed"


def test_bad_arguments_are_refused_with_sqlstate_22023(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as info:
        publish(conn, "ai", "half_open")
    assert info.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as info:
        probe(conn, "ai", "x", lease=0)
    assert info.value.sqlstate == "22023"


def test_an_api_user_may_share_circuits_but_not_touch_the_table(
    make_role: Callable[..., str],
) -> None:
    user_dsn = make_role("circuit_app", member_of=("resilience_user",))
    with psycopg.connect(user_dsn, autocommit=True) as app:
        assert publish(app, "ai", "open", 5.0)["state"] == "open"
        assert [r[0]["name"] for r in app.execute("select resilience.circuit_health()")] == ["ai"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("update resilience.circuits set state = 'closed'")


# -- the Python store -------------------------------------------------------------------


def test_a_trip_in_one_process_opens_the_circuit_in_another(
    dsn: str, stores: Callable[..., SharedCircuitStore]
) -> None:
    store = stores()
    watcher = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=60.0))
    assert store.wait_connected(10) and store.flush(10)
    result = subprocess.run(
        [sys.executable, str(WORKER), "trip", dsn, "ai"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "tripped"
    assert eventually(lambda: watcher.state is CircuitState.OPEN)
    with pytest.raises(CircuitOpenError) as info:
        watcher.execute(ok)
    assert info.value.retry_after is not None and 50 < info.value.retry_after <= 60


def test_exactly_one_process_runs_the_half_open_probe(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    publish(conn, "ai", "open", 0.0)
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "probe", dsn, "ai"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        answers = [w.communicate(timeout=60)[0].strip() for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert sorted(answers) == ["granted"] + ["refused"] * 3


def test_the_prober_closes_the_circuit_everywhere(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    first, second = stores(), stores()
    clock = ManualClock()
    a = first.attach(CircuitBreaker("ai", failure_threshold=1, timeout=0.0, clock=clock))
    b = second.attach(CircuitBreaker("ai", failure_threshold=1, timeout=60.0, clock=clock))
    assert first.wait_connected(10) and second.wait_connected(10)
    assert first.flush(10) and second.flush(10)
    trip(a, 1)
    assert first.flush(10)
    assert eventually(lambda: b.state is CircuitState.OPEN)
    assert a.execute(ok) == "ok"  # a's open time (0 s) is over: it probes, and closes
    assert first.flush(10)
    assert eventually(lambda: b.state is CircuitState.CLOSED)
    assert b.execute(ok) == "ok"


def test_while_another_process_probes_the_circuit_stays_open_here(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store = stores()
    clock = ManualClock()
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=1.0, clock=clock))
    assert store.wait_connected(10) and store.flush(10)
    trip(breaker, 1)
    assert store.flush(10)
    conn.execute("update resilience.circuits set open_until = now()")
    assert probe(conn, "ai", "someone else")["granted"] is True
    clock.advance(1)
    with pytest.raises(CircuitOpenError):
        breaker.execute(ok)  # the one probe is someone else's
    assert breaker.metrics.calls == 1


def test_without_the_database_the_breaker_works_from_local_state(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    # Nothing listens on port 1: every connection attempt fails at once.
    store = stores("host=127.0.0.1 port=1 dbname=none connect_timeout=1", retry_interval=0.2)
    clock = ManualClock()
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=2, timeout=10.0, clock=clock))
    trip(breaker, 2)
    assert breaker.state is CircuitState.OPEN
    assert breaker.execute(fail, fallback=lambda: "cached") == "cached"
    clock.advance(10)
    assert breaker.execute(ok) == "ok"  # the probe is decided locally
    assert breaker.state is CircuitState.CLOSED
    assert store.available is False


def test_transitions_made_while_the_database_was_away_are_published_when_it_returns(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store = stores(retry_interval=0.2)
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=60.0))
    assert store.wait_connected(10) and store.flush(10)
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name = 'pgresilience-circuits'"
    )
    trip(breaker, 1)  # the store finds its connection gone, keeps the transition
    assert eventually(lambda: store.flush(1), within=20)
    (state,) = (
        conn.execute("select state from resilience.circuits where name = 'ai'").fetchone() or ()
    )
    assert state == "open"


def test_status_lists_the_shared_circuits(conn: psycopg.Connection[Any]) -> None:
    from pgresilience.breakers.status import status_lines

    assert status_lines(conn) == ["shared circuits: none"]
    publish(conn, "gemini-api", "open", 30.0)
    lines = status_lines(conn)
    assert lines[0] == "shared circuits: 1"
    assert lines[1].startswith("  gemini-api: open (Circuit open - retry in ")


def test_the_demo_step_runs(dsn: str) -> None:
    from pgresilience.demo.breakers import run

    said: list[str] = []
    run(dsn, said.append)
    assert any("CircuitOpenError" in line for line in said)
    assert said[-1].startswith("health: {'healthy': True, 'state': 'closed'")


def test_operator_actions_on_a_shared_breaker(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    store = stores()
    breaker = store.attach(CircuitBreaker("ai", failure_threshold=1, timeout=60.0))
    assert store.wait_connected(10) and store.flush(10)

    def shared() -> tuple[str, float]:
        row = conn.execute(
            "select state, coalesce(extract(epoch from open_until - now()), 0)::float8"
            " from resilience.circuits where name = 'ai'"
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    breaker.open(30)
    assert store.flush(10)
    state, open_for = shared()
    assert state == "open" and 20 < open_for <= 30
    # An operator's half-open episode: its end is published as theirs, so
    # the database takes it although this process holds no probe lease.
    breaker.half_open()
    assert breaker.execute(ok) == "ok"
    assert store.flush(10)
    assert shared()[0] == "closed"
    # METRICS_ONLY is a local dry run: nothing reaches the database.
    breaker.metrics_only()
    trip(breaker, 3)
    assert store.flush(10)
    assert shared()[0] == "closed"


def test_close_sends_the_transitions_made_just_before_it(
    conn: psycopg.Connection[Any], stores: Callable[..., SharedCircuitStore]
) -> None:
    """A process shutting down right after a transition (the last one is
    often its trial closing the circuit) still publishes it: close() sends
    what is queued before it stops, so other processes never keep a stale
    state. Twenty times, to meet the race between the queue and the stop."""
    for n in range(20):
        store = stores()
        breaker = store.attach(CircuitBreaker(f"svc{n}", failure_threshold=1, timeout=60))
        assert store.wait_connected(10)
        trip(breaker, 1)
        store.close()
        row = conn.execute("select state from resilience.circuits where name = %s", (f"svc{n}",))
        assert row.fetchone() == ("open",), n
