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
