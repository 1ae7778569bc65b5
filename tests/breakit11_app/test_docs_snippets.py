"""The README's quickstart, copy-pasted onto the shop (the server side of
the app: the Python managers as the database owner), and the same from
supabase-py's rpc shape through PostgREST."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    RollbackConflict,
    TransactionManager,
)
from pgresilience.transactions.batch import operation, ref

from .app import ALICE, snapshot


def test_readme_python_quickstart_on_the_shop(shop: str, conn) -> None:
    """transaction() commits on exit; begin/execute/rollback undoes; another
    writer meets the claim (55P03, ClaimConflict); run() is one real
    transaction with $ref."""
    with TransactionManager(shop) as tm:
        with tm.transaction(timeout=30.0, label="checkout") as tx:
            order = tx.insert("orders", {"user_id": ALICE, "meta": {"gift": True}})[0]
            tx.insert(
                "order_items",
                {
                    "order_id": order["id"],
                    "line": 1,
                    "sku": "APPLE",
                    "qty": 2,
                    "unit_price": Decimal("0.50"),
                },
            )
        before = snapshot(conn)
        tx_id = tm.begin(timeout=30.0)
        tm.execute(tx_id, "orders", "update", {"status": "placed"}, match={"id": order["id"]})
        tm.execute(tx_id, "inventory", "update", {"on_hand": 8}, match={"sku": "Apple"})
        with pytest.raises(ClaimConflict) as caught:
            with tm.transaction() as other:
                other.update("orders", {"note": "x"}, match={"id": order["id"]})
        assert caught.value.sqlstate == "55P03"
        tm.rollback(tx_id)
        assert snapshot(conn) == before

        batch = tm.run(
            [
                operation("orders", "insert", {"user_id": ALICE}),
                operation(
                    "order_items",
                    "insert",
                    {
                        "order_id": ref(0, "id"),
                        "line": 1,
                        "sku": "pear",
                        "qty": 1,
                        "unit_price": Decimal("0.75"),
                    },
                ),
            ]
        )
        assert batch.success, batch.error
        assert batch[1].data[0]["total"] == 0.75
        failed = tm.run(
            [
                operation("orders", "insert", {"user_id": ALICE}),
                operation(
                    "order_items",
                    "insert",
                    {"order_id": ref(0, "id"), "line": 1, "sku": "pear", "qty": 0, "unit_price": 1},
                ),
            ]
        )
        assert not failed.success and failed.error.sqlstate == "23514"
        assert conn.execute("select count(*) from public.orders").fetchone()[0] == 2


def test_savepoints_and_rollback_to_with_the_manager(shop: str, conn) -> None:
    """tx.savepoint / rollback_to undo exactly what came after, the updated_at
    trigger and audit rows included; the rest commits."""
    with TransactionManager(shop) as tm:
        with tm.transaction() as tx:
            tx.insert("orders", {"id": 100, "user_id": ALICE})
            tx.savepoint("items")
            mid = snapshot(conn)
            tx.insert(
                "order_items",
                {"order_id": 100, "line": 1, "sku": "mug-1", "qty": 1, "unit_price": 9.99},
            )
            tx.update("orders", {"status": "placed"}, match={"id": 100})
            tx.delete("orders", match={"id": 100})
            tx.rollback_to("items")
            assert snapshot(conn) == mid
    assert (
        conn.execute("select status::text from public.orders where id = 100").fetchone()[0]
        == "draft"
    )


def test_async_manager_rollback_refuses_drift_then_force(shop: str, conn) -> None:
    """A row changed behind the transaction's back: RZ005, nothing restored,
    the transaction stays active; force overwrites."""

    async def main() -> None:
        async with AsyncTransactionManager(shop) as tm:
            tx_id = await tm.begin()
            await tm.execute(tx_id, "inventory", "update", {"on_hand": 1}, match={"sku": "pear"})
            with pytest.raises(RollbackConflict):
                await _drift_then_rollback(tm, tx_id)
            assert (await tm.status(tx_id))["status"] == "active"
            result = await tm.rollback(tx_id, force=True)
            assert result["success"] is True

    async def _drift_then_rollback(tm: AsyncTransactionManager, tx_id: str) -> None:
        # drift behind the claims' back: a superuser in replica mode fires no
        # trigger (neither the claim guard nor the app's own)
        conn.execute("set session_replication_role = replica")
        conn.execute("update public.inventory set on_hand = 4 where sku = 'PEAR'")
        conn.execute("set session_replication_role = origin")
        await tm.rollback(tx_id)

    asyncio.run(main())
    assert (
        conn.execute("select on_hand from public.inventory where sku = 'pear'").fetchone()[0] == 5
    )
