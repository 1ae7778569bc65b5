"""One logical transaction used by parallel requests (supabase-js
`Promise.all` with the same x-resilience-tx header), while another user
writes: every request of the owner succeeds, every write of the other user
on a claimed row fails with 55P03 (no deadlock, no other error), and the
rollback restores the claimed rows exactly."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create table items (id integer primary key, v text, n integer not null default 0);
insert into items select i, 'v' || i, i from generate_series(1, 20) as i;
grant select, insert, update, delete on items to authenticated;
select resilience.manage_table('items');
"""


@pytest.fixture
def admin(dsn: str) -> Iterator[Any]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(SCHEMA)
        yield connection


def test_parallel_requests_of_one_transaction_and_a_concurrent_writer(
    server: Server, database: str, admin: Any
) -> None:
    before = table_text(admin, "items")
    owner = Rest(server, database, sub="alice")
    tx = str(owner.rpc("tx_begin", 60000))
    owner.request("update items set n = n + 100 where id <= 10", tx=tx)
    errors: list[str] = []
    bob_results: dict[str, int] = {"55P03": 0, "ok": 0}

    def alice_worker(seed: int) -> None:
        rng = random.Random(seed)
        user = Rest(server, database, sub="alice")
        try:
            for step in range(25):
                row = rng.randint(1, 10)
                kind = rng.choice(["update", "insert", "delete", "upsert"])
                new_id = 100 + seed * 100 + step
                statement, params = {
                    "update": (
                        "update items set v = %s, n = n + 1 where id = %s",
                        (f"a{seed}", row),
                    ),
                    "insert": ("insert into items (id, v) values (%s, 'ins')", (new_id,)),
                    "delete": ("delete from items where id = %s", (new_id - 1,)),
                    "upsert": (
                        "insert into items (id, v) values (%s, 'up')"
                        " on conflict (id) do update set v = excluded.v",
                        (row,),
                    ),
                }[kind]
                try:
                    user.request(statement, params, tx=tx)
                except psycopg.Error as error:
                    errors.append(f"alice {kind}: {error.sqlstate} {error}")
        finally:
            user.close()

    def bob_worker() -> None:
        rng = random.Random(99)
        user = Rest(server, database, sub="bob")
        try:
            for _ in range(60):
                row = rng.randint(1, 20)
                try:
                    user.request("update items set v = 'bob' where id = %s", (row,))
                    if row <= 10:
                        errors.append(f"bob wrote claimed row {row}")
                    bob_results["ok"] += 1
                except psycopg.errors.LockNotAvailable:
                    bob_results["55P03"] += 1
                    if row > 10:
                        errors.append(f"bob refused on unclaimed row {row}")
                except psycopg.Error as error:
                    errors.append(f"bob: {error.sqlstate} {error}")
        finally:
            user.close()

    threads = [threading.Thread(target=alice_worker, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=bob_worker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:5]
    assert bob_results["55P03"] > 0 and bob_results["ok"] > 0
    result = owner.rpc("tx_rollback", tx)
    owner.close()
    assert result["success"] is True, result
    after = table_text(admin, "items")

    def key(row: str) -> int:
        return int(row[1:].split(",")[0])

    # Rows 1-10 are back exactly; no row alice inserted is left; rows 11-20
    # hold bob's writes.
    assert [r for r in after if key(r) <= 10] == [r for r in before if key(r) <= 10]
    assert sorted(key(r) for r in after) == list(range(1, 21))
