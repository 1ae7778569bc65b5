"""One client object shared by the whole app: threads (sync manager) and
asyncio tasks (async manager) run read-decide-write transactions through it
on the same rows. `lock` then `update` must lose no update: each counter ends
at its start plus the number of transactions that committed an increment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgresilience import errors
from pgresilience.transactions import AsyncTransactionManager, TransactionManager

from .conftest import Race

KEYS = (1, 2, 3)
ROUNDS = 25


def _counters(race: Race) -> dict[int, int]:
    query = "select id, n from public.acct where id = any(%s)"
    return dict(race.admin.execute(query, (list(KEYS),)).fetchall())


def _increment(manager: TransactionManager, key: int) -> bool:
    """One logical read-decide-write; False when the row was claimed."""
    try:
        with manager.transaction(timeout=20) as tx:
            row = tx.lock("acct", {"id": key})[0]
            tx.update("acct", {"n": row["n"] + 1}, {"id": key})
    except errors.ClaimConflict:
        return False
    return True


@pytest.mark.parametrize("source", ["conninfo", "one connection"])
def test_threads_share_one_manager(race: Race, source: str) -> None:
    before = _counters(race)
    connection = None
    if source == "conninfo":
        manager = TransactionManager(race.user_dsn, pool_size=4)
    else:
        connection = psycopg.connect(race.user_dsn, autocommit=True)
        manager = TransactionManager(connection)

    def worker(seed: int) -> Counter[int]:
        rng = random.Random(seed)
        done: Counter[int] = Counter()
        for _ in range(ROUNDS):
            key = rng.choice(KEYS)
            done[key] += _increment(manager, key)
        return done

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        committed = sum((f.result() for f in [pool.submit(worker, s) for s in range(4)]), Counter())
    manager.close()
    if connection is not None:
        connection.close()
    assert sum(committed.values()) > 0
    assert _counters(race) == {k: before[k] + committed[k] for k in KEYS}
    race.assert_settled()


def test_asyncio_tasks_share_one_connection(race: Race) -> None:
    before = _counters(race)

    async def main() -> Counter[int]:
        connection = await psycopg.AsyncConnection.connect(race.user_dsn, autocommit=True)
        manager = AsyncTransactionManager(connection)

        async def task(seed: int) -> Counter[int]:
            rng = random.Random(seed)
            done: Counter[int] = Counter()
            for _ in range(ROUNDS):
                key = rng.choice(KEYS)
                try:
                    async with manager.transaction(timeout=20) as tx:
                        row: dict[str, Any] = (await tx.lock("acct", {"id": key}))[0]
                        await asyncio.sleep(0)  # another task's call runs here
                        await tx.update("acct", {"n": row["n"] + 1}, {"id": key})
                    done[key] += 1
                except errors.ClaimConflict:
                    pass
            return done

        results = await asyncio.gather(*(task(s) for s in range(6)))
        await connection.close()
        return sum(results, Counter())

    committed = asyncio.run(main())
    assert sum(committed.values()) > 0
    assert _counters(race) == {k: before[k] + committed[k] for k in KEYS}
    race.assert_settled()
