"""docs/batch_and_security.md: in a request that carries `x-resilience-tx`,
header mode captures a `tx_run` batch's writes into that logical
transaction, so its rollback undoes them exactly (audit rows of the user's
trigger, the generated total, the cascade of a later delete included)."""

from __future__ import annotations

from .app import ALICE, snapshot


def test_a_batch_in_header_mode_rolls_back_with_the_transaction(user, conn) -> None:
    a = user(ALICE)
    before = snapshot(conn)
    tx = a.rpc("tx_begin")
    batch = a.in_tx(tx).rpc(
        "tx_run",
        operations=[
            {"table": "orders", "operation": "insert", "data": {"meta": {"k": [1, None]}}},
            {
                "table": "order_items",
                "operation": "insert",
                "data": [
                    {
                        "order_id": {"$ref": "0.id"},
                        "line": 1,
                        "sku": "Apple",
                        "qty": 3,
                        "unit_price": "0.50",
                    },
                    {
                        "order_id": {"$ref": "0.id"},
                        "line": 2,
                        "sku": "PEAR",
                        "qty": 1,
                        "unit_price": "0.75",
                    },
                ],
            },
            {
                "table": "inventory",
                "operation": "update",
                "data": {"on_hand": 7},
                "match": {"sku": "apple"},
            },
            {
                "table": "events",
                "operation": "insert",
                "data": {"id": 1, "at": "2026-12-02", "kind": "placed"},
            },
        ],
    )
    assert batch["success"] is True and batch["results"][2]["count"] == 1
    order_id = batch["results"][0]["data"][0]["id"]
    a.in_tx(tx).request("delete from public.orders where id = %s", (order_id,))
    assert conn.execute("select count(*) from public.order_items").fetchone()[0] == 0
    assert a.rpc("tx_status", tx_id=tx)["rows"] > 0
    assert a.rpc("tx_rollback", tx_id=tx)["success"] is True
    assert snapshot(conn) == before
