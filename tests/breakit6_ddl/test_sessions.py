"""Promise (DESIGN.md section 1, "Timeouts and cleanup"; docs/transactions.md,
"Timeouts, containment, retention"): no call of one user ever fails because
of another user's transaction; a lazy reap's lock waits are bounded, and a
migration holding the table leaves the expired transaction for a later
reap, which contains the undo's failure (`failed`, claims released)."""

from __future__ import annotations

from typing import Any

import psycopg

from .conftest import call, rows_text


def test_lazy_reap_during_a_migration_holding_the_table_neither_fails_nor_waits_for_it(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "create table t (id integer primary key, v integer);"
        " insert into t values (1, 1); select resilience.manage_table('t')"
    )
    expired = call(conn, "tx_begin")
    call(conn, "tx_execute", expired, "t", "update", {"v": 2}, {"id": 1})
    conn.execute(
        "update resilience.transactions set started_at = clock_timestamp() - interval '2 s',"
        " expires_at = clock_timestamp() - interval '1 s'"
        " where id = %s",
        (expired,),
    )

    with psycopg.connect(dsn) as migration, psycopg.connect(dsn, autocommit=True) as other:
        migration.execute("alter table t add column z integer")  # open: holds the table
        # Another user's call reaps lazily; a hang would end at this timeout
        # (57014) and fail the test.
        other.execute("set statement_timeout = '20s'")
        assert call(other, "tx_begin") is not None
        # (read from the table: tx_status counts images, which the open
        # migration's regeneration holds, and would wait like any read of t)
        row = conn.execute(
            "select status, outcome ? 'reap_after' from resilience.transactions where id = %s",
            (expired,),
        ).fetchone()
        assert row == ("active", True)
        migration.commit()

    # The images predate the new column: the explicit reap's undo conflicts,
    # the transaction is contained as failed and its claims are released.
    assert call(conn, "tx_reap") == 1
    assert call(conn, "tx_status", expired)["status"] == "failed"
    conn.execute("update t set v = 3 where id = 1")
    assert rows_text(conn, "t") == ["(1,3,)"]
