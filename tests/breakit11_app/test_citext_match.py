"""A `match` compares as `col = value` does in SQL and in PostgREST's `eq`
(docs/transactions.md, "tx_execute"). A Supabase app keys products by
`citext` so that `APPLE` and `apple` are one SKU: the match must find the
row whatever the case, as the plain statement does."""

from __future__ import annotations

import json

import pytest

from .app import ALICE


def _on_hand(conn, sku: str) -> int:
    return conn.execute("select on_hand from public.inventory where sku = %s", (sku,)).fetchone()[0]


def test_plain_statement_matches_whatever_the_case(user, conn) -> None:
    """The reference: PostgREST's PATCH `?sku=eq.APPLE` updates the row stored as `apple`."""
    a = user(ALICE)
    rows = a.request("update public.inventory set on_hand = 9 where sku = 'APPLE' returning sku")
    assert [r[0] for r in rows] == ["apple"]


@pytest.mark.parametrize("operation", ["update", "lock"])
def test_tx_execute_match_on_citext_key(user, conn, operation: str) -> None:
    """tx_execute's update and lock by a citext key find the row whatever the case."""
    a = user(ALICE)
    tx = a.rpc("tx_begin")
    result = a.rpc(
        "tx_execute",
        tx_id=tx,
        table_name="inventory",
        operation=operation,
        data={"on_hand": 9} if operation == "update" else None,
        match={"sku": "APPLE"},
    )
    assert result["count"] == 1, result
    a.rpc("tx_rollback", tx_id=tx)
    assert _on_hand(conn, "apple") == 10


def test_tx_execute_match_on_citext_non_key(user, conn) -> None:
    """A citext column in a match that is not the whole key (the general path)."""
    a = user(ALICE)
    tx = a.rpc("tx_begin")
    a.rpc("tx_execute", tx_id=tx, table_name="orders", operation="insert", data={"id": 7})
    a.rpc(
        "tx_execute",
        tx_id=tx,
        table_name="order_items",
        operation="insert",
        data={"order_id": 7, "line": 1, "sku": "apple", "qty": 1, "unit_price": "0.50"},
    )
    result = a.rpc(
        "tx_execute",
        tx_id=tx,
        table_name="order_items",
        operation="delete",
        match={"order_id": 7, "sku": "Apple"},
    )
    assert result["count"] == 1, result
    a.rpc("tx_rollback", tx_id=tx)


def test_tx_run_match_on_citext(user, conn) -> None:
    """tx_run builds its statements with the same helpers: same comparison."""
    a = user(ALICE)
    result = a.rpc(
        "tx_run",
        operations=[
            {
                "table": "inventory",
                "operation": "update",
                "data": {"on_hand": 3},
                "match": {"sku": "pear"},
            },
        ],
    )
    assert result["results"][0]["count"] == 1, json.dumps(result)
    assert _on_hand(conn, "Pear") == 3


def test_domain_over_citext_key_and_citext_array(user, conn) -> None:
    """A domain over citext (an `email` key) compares as its base type does;
    the lock, the update by a citext[] and the upsert all find the row, and
    the rollback restores it as written."""
    conn.execute("create domain public.email as public.citext check (value like '%@%')")
    conn.execute(
        "create table public.subscribers (email public.email primary key,"
        " tags public.citext[] not null default '{}')"
    )
    conn.execute("grant select, insert, update, delete on public.subscribers to authenticated")
    conn.execute("select resilience.manage_table('public.subscribers')")
    conn.execute("insert into public.subscribers values ('Ann@Example.com', '{News}')")
    a = user(ALICE)
    tx = a.rpc("tx_begin")
    run = lambda **k: a.rpc("tx_execute", tx_id=tx, table_name="subscribers", **k)["count"]  # noqa: E731
    assert run(operation="lock", match={"email": "ann@example.com"}) == 1
    assert run(operation="update", data={"tags": ["x"]}, match={"tags": ["news"]}) == 1
    assert run(operation="upsert", data={"email": "ANN@example.com", "tags": ["y"]}) == 1
    assert a.rpc("tx_rollback", tx_id=tx)["success"] is True
    rows = conn.execute("select s::text from public.subscribers as s").fetchall()
    assert rows == [("(Ann@Example.com,{News})",)]


def test_an_operator_another_role_put_elsewhere_is_not_the_match(user, conn) -> None:
    """Only the type's own `=` (its schema, its owner) is taken: another
    role's `=` for citext, in a schema whose name sorts first, always true,
    would otherwise run in every caller's match (and match every row)."""
    conn.execute("create role decoy_owner")
    conn.execute("create schema aaa authorization decoy_owner")
    conn.execute("grant usage on schema public to decoy_owner")
    conn.execute("set role decoy_owner")
    conn.execute(
        "create function aaa.always(public.citext, public.citext) returns boolean"
        " language sql immutable as 'select true'"
    )
    conn.execute(
        "create operator aaa.= (leftarg = public.citext, rightarg = public.citext,"
        " function = aaa.always)"
    )
    conn.execute("reset role")
    conn.execute("select resilience.manage_table('public.inventory')")
    chosen = conn.execute("select resilience._equality_operator('public.citext'::regtype)")
    assert chosen.fetchone()[0] == "operator(public.=)"
    a = user(ALICE)
    tx = a.rpc("tx_begin")
    result = a.rpc(
        "tx_execute", tx_id=tx, table_name="inventory", operation="update",
        data={"on_hand": 9}, match={"sku": "APPLE"},
    )  # fmt: skip
    assert result["count"] == 1, result
    a.rpc("tx_rollback", tx_id=tx)
