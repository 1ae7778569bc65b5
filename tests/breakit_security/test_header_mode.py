"""PostgREST header mode (x-resilience-tx in request.headers) with hostile
headers: another user's transaction, malformed ids, ids that are not
strings, the setting and the header disagreeing. A write never joins a
transaction its caller does not own (RZ001), and the owner's transaction is
left as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from security.sessions import Session

from .conftest import raises_sqlstate, table_rows

INSERT = "insert into public.notes (body) values ('from b')"


def _untouched(owner: Session, tx: str) -> None:
    status = owner.rpc("tx_status", tx_id=tx)
    assert (status["status"], status["operations"], status["claims"]) == ("active", 0, 0)


def test_another_users_transaction_in_the_header(
    app: psycopg.Connection[Any], user_a: Session, session: Callable[..., Session]
) -> None:
    app.execute("grant select, insert, update, delete on public.notes to service_role")
    tx = str(user_a.rpc("tx_begin"))
    before = table_rows(app, "public.notes")
    # Without a subject, the notes' RLS refuses the row (42501) before the
    # capture trigger (AFTER the statement) even looks at the header.
    intruders = (
        ("authenticated", "user-b", ("RZ001",)),
        ("authenticated", None, ("RZ001", "42501")),
        ("service_role", "user-a", ("RZ001",)),
    )
    for role, sub, sqlstates in intruders:
        intruder = session(sub, role=role, headers={"x-resilience-tx": tx})
        with raises_sqlstate(*sqlstates):
            intruder.query(INSERT)
        with raises_sqlstate(*sqlstates):
            intruder.rpc(
                "tx_run",
                operations=[
                    {"table": "notes", "operation": "insert", "data": {"body": "batch from b"}}
                ],
            )
    assert table_rows(app, "public.notes") == before
    _untouched(user_a, tx)


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "'; delete from public.notes; --",
        "{00000000-0000-0000-0000-000000000000}",
        "00000000-0000-0000-0000-000000000000",
        " " * 3,
        "x" * 100_000,
        12345,
        ["a"],
        {"id": "x"},
    ],
)
def test_malformed_header_ids(
    app: psycopg.Connection[Any], session: Callable[..., Session], value: Any
) -> None:
    before = table_rows(app, "public.notes")
    client = session("user-b")
    with raises_sqlstate("RZ001"), client.request() as conn:
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": value}),),
        )
        conn.execute(INSERT)
    assert table_rows(app, "public.notes") == before


def test_setting_and_header_cannot_smuggle_a_foreign_id(
    app: psycopg.Connection[Any], user_a: Session, user_b: Session
) -> None:
    """resilience.tx_id (tx_execute's setting) is read first: a client that
    sets it to another user's id beside a header holding its own gets RZ001."""
    tx_a = str(user_a.rpc("tx_begin"))
    tx_b = str(user_b.rpc("tx_begin"))
    before = table_rows(app, "public.notes")
    with raises_sqlstate("RZ001"), user_b.request() as conn:
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx_b}),),
        )
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx_a,))
        conn.execute(INSERT)
    assert table_rows(app, "public.notes") == before
    _untouched(user_a, tx_a)
    _untouched(user_b, tx_b)


def test_header_names_another_users_transaction_in_a_claimed_table(
    app: psycopg.Connection[Any], user_a: Session, session: Callable[..., Session]
) -> None:
    """With a claim held, the intruder's error is still RZ001 (its header
    names a transaction it does not own), never the holder's claim."""
    tx = str(user_a.rpc("tx_begin"))
    user_a.rpc(
        "tx_execute", tx_id=tx, table_name="notes", operation="insert", data={"body": "claimed"}
    )
    intruder = session("user-b", headers={"x-resilience-tx": tx})
    with raises_sqlstate("RZ001"):
        intruder.query("update public.notes set body = 'b was here'")
    status = user_a.rpc("tx_status", tx_id=tx)
    assert (status["operations"], status["claims"]) == (1, 1)
    assert user_a.rpc("tx_rollback", tx_id=tx)["status"] == "rolled_back"
