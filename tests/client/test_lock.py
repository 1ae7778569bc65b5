"""tx.lock(table, match): claims the matched rows without writing them and
returns them (the logical SELECT ... FOR UPDATE), sync and async."""

from __future__ import annotations

import asyncio

from pgresilience import AsyncTransactionManager, ClaimConflict, TransactionManager


def test_lock_returns_the_rows_and_claims_them(accounts, dsn):
    with TransactionManager(dsn) as tm, tm.transaction() as tx:
        rows = tx.lock("accounts", {"id": 7})
        assert rows == [{"id": 7, "owner": "owner 7", "balance": 100}]
        other = tm.begin()
        refused = tm.execute(other, "accounts", "update", {"balance": 0}, match={"id": 7})
        assert isinstance(refused.error, ClaimConflict)
        tm.rollback(other)
        tx.update("accounts", {"balance": rows[0]["balance"] - 30}, match={"id": 7})
    assert accounts.execute("select balance from accounts where id = 7").fetchone() == (70,)


def test_async_lock_returns_the_rows(accounts, dsn):
    async def main() -> list[dict[str, object]]:
        async with AsyncTransactionManager(dsn) as tm, tm.transaction() as tx:
            return await tx.lock("accounts", {"id": 8})

    assert asyncio.run(main()) == [{"id": 8, "owner": "owner 8", "balance": 100}]
