"""Two logical transactions claim the same row in calls that overlap
(DESIGN.md section 1, "Claims"): the second waits at most for the first
CALL (its database transaction), never for the first logical transaction,
and then gets 55P03; had the first call failed, the second claims the row."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, rows_text, sqlstate_of
from .test_lifecycle import _wait_until_blocked


@pytest.mark.parametrize("first_call", ["commits", "fails"])
@pytest.mark.parametrize("second_op", ["update", "delete", "upsert"])
def test_overlapping_calls_on_one_row(
    conn: psycopg.Connection[Any], dsn: str, first_call: str, second_op: str
) -> None:
    conn.execute("""
        create table seats (id int primary key, holder text);
        insert into seats values (1, null);
        select resilience.manage_table('seats');
    """)
    t1, t2 = begin(conn), begin(conn)
    data = {"holder": "two"} if second_op == "update" else None
    if second_op == "upsert":
        data = {"id": 1, "holder": "two"}
    match = None if second_op == "upsert" else {"id": 1}
    outcome: dict[str, str | None] = {}
    with psycopg.connect(dsn) as one, psycopg.connect(dsn, autocommit=True) as two:
        execute(one, t1, "seats", "update", {"holder": "one"}, {"id": 1})  # call still open

        def second() -> None:
            outcome["state"] = sqlstate_of(execute, two, t2, "seats", second_op, data, match)

        thread = threading.Thread(target=second)
        thread.start()
        _wait_until_blocked(conn, two.info.backend_pid)
        if first_call == "commits":
            one.commit()
        else:
            one.rollback()
        thread.join()
    if first_call == "commits":
        assert outcome["state"] == "55P03"
        assert rows_text(conn, "seats", "id") == ["(1,one)"]
        call(conn, "tx_rollback", t1)
    else:
        assert outcome["state"] is None
        call(conn, "tx_rollback", t2)
    assert rows_text(conn, "seats", "id") == ["(1,)"]
    assert call(conn, "tx_status", t2)["status"] in ("active", "rolled_back")


def test_lock_during_an_open_call_fails_at_once(conn: psycopg.Connection[Any], dsn: str) -> None:
    """lock selects FOR UPDATE NOWAIT: against a row another call is writing
    it does not even wait for that call (docs/transactions.md, tx_execute)."""
    conn.execute("""
        create table seats (id int primary key, holder text);
        insert into seats values (1, null);
        select resilience.manage_table('seats');
    """)
    t1, t2 = begin(conn), begin(conn)
    with psycopg.connect(dsn) as one:
        execute(one, t1, "seats", "update", {"holder": "one"}, {"id": 1})  # call still open
        assert sqlstate_of(execute, conn, t2, "seats", "lock", None, {"id": 1}) == "55P03"
        one.rollback()
    assert execute(conn, t2, "seats", "lock", None, {"id": 1})["count"] == 1
    call(conn, "tx_rollback", t2)
