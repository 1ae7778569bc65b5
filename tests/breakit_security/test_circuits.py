"""Who may change the shared circuit state (resilience.circuits).

DESIGN.md and docs/breakers.md say the store's functions (_circuit_publish,
_circuit_probe, _circuit_get) are "granted to resilience_user, not exposed as
wrappers", and that operator actions (force_open, disable, reset) "always
win". They are silent about Supabase's `authenticated`, onto which the
install mirrors every privilege of resilience_user. Decision: circuit state
belongs to the app's server processes (a role granted resilience_user, or
`service_role`); a signed-in end user holding a JWT must not force the app's
breakers open (a denial of service of every process), disable them (calls
pass while the service is down), reset them, take the probe lease for ever,
or fill the table with circuits. `circuit_health()` stays readable, as
documented. `anon` gets nothing (tests/security/test_anon.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from security.sessions import Session

from .conftest import raises_sqlstate

CIRCUIT_FUNCTIONS = (
    "resilience._circuit_publish(text, text, double precision, text, text, double precision,"
    " boolean)",
    "resilience._circuit_probe(text, text, double precision)",
    "resilience._circuit_get(text[])",
)


def _circuits(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("select name, state, probe_owner from resilience.circuits").fetchall()


@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_end_users_hold_no_circuit_function(conn: psycopg.Connection[Any], role: str) -> None:
    for signature in CIRCUIT_FUNCTIONS:
        assert not conn.execute(
            "select has_function_privilege(%s, %s, 'execute')", (role, signature)
        ).fetchone()[0], (role, signature)  # type: ignore[index]


def test_signed_in_user_cannot_force_disable_reset_or_probe(
    conn: psycopg.Connection[Any], session: Callable[..., Session]
) -> None:
    service = session("svc", role="service_role")
    service.rpc(
        "_circuit_publish",
        circuit_name="ai",
        new_state="open",
        open_seconds=0.0,
        reason="503",
        owner="worker-1",
    )
    before = _circuits(conn)
    mallory = session("mallory")
    for state in ("forced_open", "disabled", "closed", "open"):
        with raises_sqlstate("42501"):
            mallory.rpc(
                "_circuit_publish",
                circuit_name="ai",
                new_state=state,
                open_seconds=1e9,
                reason="x",
                owner="mallory",
                forced=True,
            )
    with raises_sqlstate("42501"):
        mallory.rpc("_circuit_probe", circuit_name="ai", owner="mallory", lease_seconds=1e9)
    with raises_sqlstate("42501"):
        mallory.rpc(
            "_circuit_publish",
            circuit_name="filler",
            new_state="open",
            open_seconds=0.0,
            reason=None,
            owner="mallory",
        )
    with raises_sqlstate("42501"):
        mallory.query("select resilience._circuit_get(array['ai'])")
    for statement in (
        "insert into resilience.circuits (name) values ('filler')",
        "update resilience.circuits set state = 'disabled'",
        "delete from resilience.circuits",
    ):
        with raises_sqlstate("42501"):
            mallory.query(statement)
    assert _circuits(conn) == before
    # The documented dashboard stays readable.
    assert [h["name"] for h in mallory.rpc_set("circuit_health")] == ["ai"]


def test_app_roles_keep_the_store(
    conn: psycopg.Connection[Any],
    session: Callable[..., Session],
    make_role: Callable[..., str],
) -> None:
    """service_role and a plain role granted resilience_user (the app's worker
    processes) still publish, probe and read."""
    service = session("svc", role="service_role")
    doc = service.rpc(
        "_circuit_publish",
        circuit_name="ai",
        new_state="forced_open",
        open_seconds=0.0,
        reason="operator",
        owner="ops",
        forced=True,
    )
    assert doc["state"] == "forced_open"
    worker_dsn = make_role("breaksec_worker", member_of=("resilience_user",))
    with psycopg.connect(worker_dsn, autocommit=True) as worker:
        worker.execute(
            "select resilience._circuit_publish('ai', 'closed', 0, 'reset', 'ops', null, true)"
        )
        worker.execute("select resilience._circuit_publish('ai', 'open', 0, '503', 'w1')")
        granted = worker.execute("select resilience._circuit_probe('ai', 'w1', 15)").fetchone()[0]  # type: ignore[index]
        assert granted["granted"] is True
        assert len(worker.execute("select resilience._circuit_get(array['ai'])").fetchall()) == 1
    assert _circuits(conn) == [("ai", "half_open", "w1")]
