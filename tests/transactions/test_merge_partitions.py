"""MERGE that moves rows between partitions of a managed table
(docs/transactions.md, known limitations). PostgreSQL executes such a move
as a delete and an insert and puts the rows in no UPDATE transition table:
a MERGE with only an UPDATE action reaches no capture trigger, one with an
INSERT action shows the moved row as inserted. Neither the capture nor the
claim guard sees the old row leave. The same move made by UPDATE is
guarded and captured."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute

ACCOUNTS = """
create table acct (id int, region int, balance int, primary key (id, region))
    partition by list (region);
create table acct_eu partition of acct for values in (1);
create table acct_us partition of acct for values in (2);
insert into acct values (6, 1, 60);
select resilience.manage_table('acct');
"""
MOVE = (
    "merge into acct as a using (values (5)) as s (id) on a.id = s.id"
    " when matched then update set region = 2"
)


def accounts(conn: psycopg.Connection[Any]) -> list[tuple[int, int, int]]:
    return conn.execute("select * from acct order by id, region").fetchall()


def test_an_update_moving_a_claimed_row_is_refused(conn):
    conn.execute(ACCOUNTS)
    tx = begin(conn)
    execute(conn, tx, "acct", "insert", {"id": 5, "region": 1, "balance": 100})
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("update acct set region = 2 where id = 5")
    assert raised.value.sqlstate == "55P03"
    call(conn, "tx_rollback", tx)
    assert accounts(conn) == [(6, 1, 60)]


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: a plain MERGE that moves a row a logical transaction inserted"
    " passes the guard, and the rollback then takes the row as already undone: success, the"
    " row left where MERGE put it (docs/transactions.md)",
)
def test_a_plain_merge_moving_a_row_the_transaction_inserted_is_refused_or_undone(conn):
    conn.execute(ACCOUNTS)
    tx = begin(conn)
    execute(conn, tx, "acct", "insert", {"id": 5, "region": 1, "balance": 100})
    try:
        conn.execute(MOVE)
    except psycopg.Error as error:
        assert error.sqlstate == "55P03"
    try:
        call(conn, "tx_rollback", tx)
    except psycopg.Error as error:
        assert error.sqlstate == "RZ005"
        return
    assert accounts(conn) == [(6, 1, 60)]


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: a MERGE that moves a claimed row to another partition is not"
    " refused: PostgreSQL puts the moved row in no UPDATE transition table, so the claim"
    " guard never sees it (docs/transactions.md)",
)
def test_a_plain_merge_moving_a_claimed_row_is_refused(conn):
    conn.execute(ACCOUNTS)
    tx = begin(conn)
    execute(conn, tx, "acct", "update", {"balance": 61}, {"id": 6, "region": 1})
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "merge into acct as a using (values (6)) as s (id) on a.id = s.id"
            " when matched then update set region = 2"
        )
    assert raised.value.sqlstate == "55P03"


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: a captured MERGE that moves a row to another partition"
    " records only its insert into the new partition (PostgreSQL puts the moved row in no"
    " UPDATE transition table): the rollback removes it and the old row is lost"
    " (docs/transactions.md)",
)
def test_a_captured_merge_moving_a_row_rolls_back_exactly(conn):
    conn.execute(ACCOUNTS)
    before = accounts(conn)
    tx = begin(conn)
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        conn.execute(
            "merge into acct as a using (values (6, 1), (7, 1)) as s (id, region)"
            " on a.id = s.id and a.region = s.region"
            " when matched then update set region = 2"
            " when not matched then insert values (s.id, s.region, 70)"
        )
    try:
        call(conn, "tx_rollback", tx)
    except psycopg.Error:
        pass
    assert accounts(conn) == before
