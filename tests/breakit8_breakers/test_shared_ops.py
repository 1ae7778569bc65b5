"""Shared breakers and the operator's and the app's habits: open(duration),
half_open(), metrics_only(), remove(), retry hints, listeners, closing the
store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgresilience.breakers import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
)
from pgresilience.breakers.shared import SharedCircuitStore


class Boom(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, seconds: int) -> None:
        super().__init__("429")
        self.headers = {"Retry-After": str(seconds)}


def fail() -> None:
    raise Boom("503")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def stores(dsn: str) -> Iterator[Callable[..., SharedCircuitStore]]:
    made: list[SharedCircuitStore] = []

    def make(owner: str, **options: Any) -> SharedCircuitStore:
        options.setdefault("refresh_interval", 0.2)
        options.setdefault("request_timeout", 1.0)
        store = SharedCircuitStore(dsn, owner=owner, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def shared(store: SharedCircuitStore, name: str = "ai", **options: Any) -> CircuitBreaker:
    options.setdefault("failure_threshold", 1)
    options.setdefault("timeout", 0.3)
    breaker = store.attach(CircuitBreaker(name, **options))
    assert store.wait_connected(10) and store.flush()
    return breaker


def row(conn: psycopg.Connection[Any], name: str = "ai") -> dict[str, Any] | None:
    found = conn.execute(
        "select resilience._circuit_json(c) from resilience.circuits as c where name = %s",
        (name,),
    ).fetchone()
    return None if found is None else dict(found[0])


def test_operator_open_for_a_duration_reaches_the_others(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    a, b = shared(stores("a")), shared(stores("b"))
    a.open(120.0)
    assert wait_for(lambda: b.state is CircuitState.OPEN)
    assert 100 < (b.retry_after or 0) <= 120


@pytest.mark.parametrize("duration", [float("inf"), 1e300])
def test_operator_open_until_further_notice_reaches_the_others(
    stores: Callable[..., SharedCircuitStore], duration: float
) -> None:
    """open(duration) takes any duration >= 0; one the database's interval
    cannot hold must still open the circuit everywhere, not be dropped."""
    a, b = shared(stores("a")), shared(stores("b"))
    a.open(duration)
    assert a.gate is not None
    a.gate.flush()  # type: ignore[attr-defined]
    assert wait_for(lambda: b.state is CircuitState.OPEN, 2.0)
    assert (b.retry_after or 0) > 10**8


def test_a_retry_hint_opens_every_process_until_then(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    a, b = shared(stores("a"), failure_threshold=5), shared(stores("b"), failure_threshold=5)
    with pytest.raises(RateLimited):
        a.execute(lambda: (_ for _ in ()).throw(RateLimited(90)))
    assert wait_for(lambda: b.state is CircuitState.OPEN)
    assert 80 < (b.retry_after or 0) <= 90
    found = row(conn)
    assert found is not None and found["reason"] == "service asked to retry after 90s"


def test_an_operators_half_open_episode_ends_as_an_operator_action(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    a, b = shared(stores("a")), shared(stores("b"))
    a.half_open()  # local: the others stay closed
    assert a.gate is not None and a.gate.flush()  # type: ignore[attr-defined]
    assert row(conn) is None and b.state is CircuitState.CLOSED
    with pytest.raises(Boom):
        a.execute(fail)  # the trial fails: published, and it opens everyone
    assert wait_for(lambda: b.state is CircuitState.OPEN)
    b.half_open()
    assert b.execute(lambda: "ok") == "ok"  # closes the row without a lease
    assert wait_for(lambda: a.state is CircuitState.CLOSED)
    found = row(conn)
    assert found is not None and found["state"] == "closed"


def test_metrics_only_is_a_local_dry_run(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    a, b = shared(stores("a")), shared(stores("b"))
    a.metrics_only()
    with pytest.raises(Boom):
        a.execute(fail)
    assert a.gate is not None and a.gate.flush()  # type: ignore[attr-defined]
    assert row(conn) is None  # neither the mode nor its would-be trip is published
    with pytest.raises(Boom):
        b.execute(fail)
    assert b.gate is not None and b.gate.flush()  # type: ignore[attr-defined]
    time.sleep(0.5)  # two refreshes
    assert a.state is CircuitState.METRICS_ONLY
    assert a.execute(lambda: "passes") == "passes"


def test_remove_leaves_the_store_and_goes_on_locally(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    store = stores("a")
    registry = CircuitBreakerRegistry(shared_store=store)
    breaker = registry.get_breaker("ai", shared=True, failure_threshold=1, timeout=60)
    assert store.wait_connected(10) and store.flush()
    other = shared(stores("b"))
    assert registry.remove("ai") is breaker
    assert breaker.gate is None
    with pytest.raises(Boom):
        breaker.execute(fail)
    assert breaker.state is CircuitState.OPEN
    other.force_open()
    assert other.gate is not None and other.gate.flush()  # type: ignore[attr-defined]
    assert store.flush()
    time.sleep(0.5)
    found = row(conn)
    assert found is not None and found["state"] == "forced_open"
    assert found["updated_by"] == "b"
    assert breaker.state is CircuitState.OPEN  # received nothing


def test_listeners_hear_remote_transitions_marked_remote(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    a, b = shared(stores("a")), shared(stores("b"))
    heard: list[Any] = []

    class Listener:
        def on_state_change(self, _breaker: Any, transition: Any) -> None:
            heard.append(transition)

    b.add_listener(Listener())
    with pytest.raises(Boom):
        a.execute(fail)
    assert wait_for(lambda: bool(heard))
    assert (heard[0].old, heard[0].new, heard[0].remote) == (
        CircuitState.CLOSED,
        CircuitState.OPEN,
        True,
    )


def test_a_closed_store_refuses_new_breakers_rather_than_pretend(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    """An app that closes its store at shutdown (or in a test's teardown)
    and keeps the registry: a breaker attached afterwards would never share
    anything, its health would say "available", and every probe would wait
    request_timeout for an I/O thread that is gone."""
    store = stores("a")
    registry = CircuitBreakerRegistry(shared_store=store)
    registry.get_breaker("first", shared=True)
    assert store.wait_connected(10)
    store.close()
    assert not store.available
    with pytest.raises(RuntimeError):
        registry.get_breaker("second", shared=True, failure_threshold=1, timeout=0.1)
    assert "second" not in registry


def test_close_sends_a_trip_made_just_before(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    store = stores("a")
    breaker = shared(store)
    with pytest.raises(Boom):
        breaker.execute(fail)
    store.close()
    found = row(conn)
    assert found is not None and found["state"] == "open"
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: "x")  # goes on locally


def test_health_is_json_and_errors_survive_a_process_pool(
    stores: Callable[..., SharedCircuitStore],
) -> None:
    import json
    import pickle

    a = shared(stores("a"))
    local = CircuitBreaker("local", failure_threshold=1)
    for breaker in (a, local):
        with pytest.raises(Boom):
            breaker.execute(fail)
        json.dumps(breaker.health())
        with pytest.raises(CircuitOpenError) as info:
            breaker.execute(lambda: "x")
        copy = pickle.loads(pickle.dumps(info.value))
        assert (copy.name, copy.state) == (breaker.name, CircuitState.OPEN)
        assert str(copy).startswith(f"circuit {breaker.name!r} is open - retry in ")


def test_circuit_health_is_readable_by_end_users_through_the_exposed_wrapper(
    stores: Callable[..., SharedCircuitStore], conn: psycopg.Connection[Any]
) -> None:
    a = shared(stores("a"))
    with pytest.raises(Boom):
        a.execute(fail)
    assert a.gate is not None and a.gate.flush()  # type: ignore[attr-defined]
    with conn.transaction():
        conn.execute("set local role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select public.circuit_health()")
        raise psycopg.Rollback()
    with conn.transaction():
        conn.execute("set local role authenticated")
        [(health,)] = conn.execute("select public.circuit_health()").fetchall()
        assert health["state"] == "open" and health["healthy"] is False
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "select resilience._circuit_publish('ai', 'closed', 0, 'x', 'y', null, true)"
            )
        raise psycopg.Rollback()


def test_a_database_away_keeps_only_the_latest_transition_per_circuit(
    dsn: str,
    make_role: Callable[..., str],
    conn: psycopg.Connection[Any],
) -> None:
    """The unsent transitions are bounded: the latest per circuit, published
    on reconnection; the probe is decided locally at once meanwhile."""
    app = make_role("breakit8_away", member_of=("resilience_user",))
    with SharedCircuitStore(
        app, owner="away", refresh_interval=0.2, request_timeout=1.0, retry_interval=0.2
    ) as store:
        breaker = shared(store, failure_threshold=1, timeout=0.05)
        conn.execute("alter role breakit8_away nologin")
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'breakit8_away'"
        )
        try:
            assert wait_for(lambda: not store.available)
            for _ in range(15):  # 15 trips and recoveries while away
                with pytest.raises(Boom):
                    breaker.execute(fail)
                time.sleep(0.06)
                started = time.monotonic()
                assert breaker.execute(lambda: "ok") == "ok"
                assert time.monotonic() - started < 0.5  # decided locally, no wait
            assert len(store._unsent) == 1  # noqa: SLF001 - the documented bound
        finally:
            conn.execute("alter role breakit8_away login")
        assert wait_for(lambda: store.available)
        assert store.flush()
        found = row(conn)
        assert found is not None and found["state"] == "closed"
        events = conn.execute(
            "select count(*) from resilience.audit_log where event = 'circuit_state'"
        ).fetchone()
        assert events is not None and events[0] <= 2  # not 30
