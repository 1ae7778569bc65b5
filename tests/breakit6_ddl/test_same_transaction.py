"""Promise (docs/transactions.md, "DDL on managed tables", "Capture"): DDL
inside the same database transaction as captured writes (a DO block, a
migration run through PostgREST with the x-resilience-tx header) keeps
capturing with the table's new shape, and the rows imaged before an added
column are conflicts (RZ005; force restores them with the new column null)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .conftest import call, rows_text, sqlstate_of

TABLE = """
create table t (id integer primary key, v integer);
insert into t values (1, 10);
select resilience.manage_table('t');
"""


@pytest.mark.parametrize("via", ["setting", "header"])
def test_add_column_between_captured_writes_of_one_database_transaction(
    conn: psycopg.Connection[Any], via: str
) -> None:
    conn.execute(TABLE)
    tx = call(conn, "tx_begin")
    with conn.transaction():
        if via == "setting":
            conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
        else:
            headers = json.dumps({"x-resilience-tx": str(tx)})
            conn.execute("select set_config('request.headers', %s, true)", (headers,))
        conn.execute("update t set v = 11 where id = 1")
        conn.execute("alter table t add column z integer not null default 7")
        conn.execute("insert into t (id, v) values (2, 20)")
        conn.execute("alter table t rename column v to w")
        conn.execute("update t set w = 21, z = 8 where id = 2")
    assert rows_text(conn, "t") == ["(1,11,7)", "(2,21,8)"]
    assert call(conn, "tx_status", tx)["operations"] == 3

    # The update of row 1 was imaged before z existed.
    assert sqlstate_of(call, conn, "tx_rollback", tx) == "RZ005"
    assert rows_text(conn, "t") == ["(1,11,7)", "(2,21,8)"]
    # force writes z NULL into row 1: the NOT NULL column refuses (RZ005),
    # force never overrides a constraint.
    assert sqlstate_of(call, conn, "tx_rollback", tx, None, True) == "RZ005"
    conn.execute("alter table t alter column z drop not null")
    call(conn, "tx_rollback", tx, None, True)
    assert rows_text(conn, "t") == ["(1,10,)"]


def test_rename_between_captured_writes_of_one_database_transaction_rolls_back_exactly(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(TABLE)
    tx = call(conn, "tx_begin")
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
        conn.execute("update t set v = 11 where id = 1")
        conn.execute('alter table t rename column v to "seq"')
        conn.execute('alter table t rename to "tx_id"')
        conn.execute('insert into "tx_id" values (2, 20)')
        conn.execute('update "tx_id" set id = 3 where id = 2')
    call(conn, "tx_rollback", tx)
    assert rows_text(conn, "tx_id") == ["(1,10)"]
