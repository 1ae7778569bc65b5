"""Expiry and the reaper, as other users meet them.

DESIGN.md section 1, "Claims" and "Timeouts and cleanup": a claim held by
an expired transaction is resolved by rolling that transaction back first;
no call of one user (tx_begin, tx_execute, a plain write) ever fails
because of another user's transaction. Transactions are expired by moving
their clock back (no sleeping)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, rows_text, sqlstate_of


@pytest.fixture
def users(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    conn.execute("""
        create table stock (id int primary key, qty int not null, sku text unique);
        insert into stock values (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c');
        select resilience.manage_table('stock');
    """)
    dsns = [make_role(n, member_of=("resilience_user",)) for n in ("bt4_ann", "bt4_ben")]
    conn.execute("grant select, insert, update, delete on stock to bt4_ann, bt4_ben")
    with (
        psycopg.connect(dsns[0], autocommit=True) as ann,
        psycopg.connect(dsns[1], autocommit=True) as ben,
    ):
        yield ann, ben


def expire(conn: psycopg.Connection[Any], tx: str) -> None:
    conn.execute(
        "update resilience.transactions set started_at = now() - interval '2 minutes',"
        " expires_at = now() - interval '1 minute' where id = %s",
        (tx,),
    )


def test_write_on_a_row_claimed_by_an_expired_transaction_reaps_it(
    conn: psycopg.Connection[Any], users: tuple[psycopg.Connection[Any], psycopg.Connection[Any]]
) -> None:
    ann, ben = users
    old = begin(ann)
    execute(ann, old, "stock", "update", {"qty": 0}, {"id": 1})
    expire(conn, old)
    tx = begin(ben)
    assert execute(ben, tx, "stock", "update", {"qty": 5}, {"id": 1})["count"] == 1
    assert call(ann, "tx_status", old)["status"] == "timed_out"
    call(ben, "tx_commit", tx)
    assert rows_text(conn, "stock", "id")[0] == "(1,5,a)"


def test_an_expired_transaction_whose_undo_fails_blocks_nobody(
    conn: psycopg.Connection[Any], users: tuple[psycopg.Connection[Any], psycopg.Connection[Any]]
) -> None:
    """Ann's expired transaction cannot be undone (a plain write took the sku
    her undo must give back): ben's calls all go through, ann's becomes
    failed with its claims released, and the rows stay as they are."""
    ann, ben = users
    old = begin(ann)
    execute(ann, old, "stock", "update", {"sku": "z"}, {"id": 1})
    conn.execute("insert into stock values (4, 40, 'a')")  # takes the sku back
    expire(conn, old)
    tx = begin(ben)  # the lazy reap meets the failing undo
    assert execute(ben, tx, "stock", "update", {"qty": 9}, {"id": 1})["count"] == 1
    assert execute(ben, tx, "stock", "update", {"qty": 8}, {"id": 2})["count"] == 1
    call(ben, "tx_commit", tx)
    assert call(ann, "tx_status", old)["status"] == "failed"
    assert rows_text(conn, "stock", "id") == ["(1,9,z)", "(2,8,b)", "(3,30,c)", "(4,40,a)"]


def test_a_lazy_reap_that_meets_a_row_lock_does_not_fail_other_users(
    conn: psycopg.Connection[Any],
    dsn: str,
    users: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """Ann's expired transaction's undo needs a row that a third session holds
    FOR SHARE: ben's tx_begin, tx_execute on other rows and a plain write
    all succeed; ann's transaction stays for a later reap, and is undone
    once the lock is gone."""
    ann, ben = users
    old = begin(ann)
    execute(ann, old, "stock", "update", {"qty": 0}, {"id": 1})
    expire(conn, old)
    with psycopg.connect(dsn) as holder:
        holder.execute("select from stock where id = 1 for share")
        tx = begin(ben)
        assert execute(ben, tx, "stock", "update", {"qty": 7}, {"id": 2})["count"] == 1
        ben.execute("update stock set qty = 31 where id = 3")
        call(ben, "tx_commit", tx)
        assert call(ann, "tx_status", old)["status"] == "active"
        holder.rollback()
    assert call(conn, "tx_reap", 10) == 1
    assert call(ann, "tx_status", old)["status"] == "timed_out"
    assert rows_text(conn, "stock", "id") == ["(1,10,a)", "(2,7,b)", "(3,31,c)"]


def test_expired_transaction_refuses_its_owner_and_rolls_back_on_request(
    conn: psycopg.Connection[Any], users: tuple[psycopg.Connection[Any], psycopg.Connection[Any]]
) -> None:
    ann, _ = users
    tx = begin(ann)
    execute(ann, tx, "stock", "delete", None, {"id": 2})
    expire(conn, tx)
    assert sqlstate_of(execute, ann, tx, "stock", "delete", None, {"id": 3}) == "RZ003"
    assert sqlstate_of(call, ann, "tx_commit", tx) == "RZ003"
    assert sqlstate_of(call, ann, "tx_savepoint", tx, "s") == "RZ003"
    result = call(ann, "tx_rollback", tx)
    assert result["success"] is True
    assert rows_text(conn, "stock", "id") == ["(1,10,a)", "(2,20,b)", "(3,30,c)"]
