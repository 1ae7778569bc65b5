"""The upgrade from 0.1.0 over state at its edges: a transaction whose undo
fails at the upgrade (docs/transactions.md "Upgrade from 0.1.0": `failed`,
audit `conflict`), and managed tables with names PostgreSQL allows but our
generated SQL must quote."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgresilience import installer


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def test_a_transaction_whose_undo_fails_at_the_upgrade_is_failed_and_never_reported_restored(
    bare_dsn, install_0_1_0
):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(
            "create table acct (id int primary key, bal int not null);"
            " insert into acct values (1, 100);"
            " select resilience.manage_table('acct')"
        )
        tx = _one(conn, "select resilience.tx_begin(600000, 'drifted')")
        conn.execute(
            "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')",
            (tx,),
        )
        # A write that bypassed the guards (triggers off): the undo must refuse.
        conn.execute("alter table acct disable trigger user")
        conn.execute("update acct set bal = 50 where id = 1")
        conn.execute("alter table acct enable trigger user")
        audit_before = _one(conn, "select max(id) from resilience.audit_log")

        installer.install(bare_dsn)

        assert conn.execute("select * from acct").fetchall() == [(1, 50)]
        status, outcome = conn.execute(
            "select status, outcome from resilience.transactions where id = %s", (tx,)
        ).fetchone() or (None, None)
        assert (
            status == "failed" and outcome["reason"] == "upgrade to typed images: rollback failed"
        )
        assert conn.execute(
            "select event, tx_id from resilience.audit_log where id > %s", (audit_before,)
        ).fetchall() == [("conflict", tx)]
        # Its images went with 0.1.0's jsonb tables: a forced retry cannot
        # restore the row, and must not say it did.
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select resilience.tx_rollback(%s, 'retry', true)", (tx,))
        assert refused.value.sqlstate == "RZ005"
        assert json.loads(refused.value.diag.message_detail or "")["conflicts"][0]["reason"] == (
            "images dropped by the upgrade from 0.1.0"
        )
        assert (
            _one(conn, "select status from resilience.transactions where id = %s", tx) == "failed"
        )
        assert conn.execute("select * from acct").fetchall() == [(1, 50)]
        # The row is free again for the app.
        conn.execute("update acct set bal = 60 where id = 1")


HOSTILE = """
create schema "My ""App"".v1";
create table "My ""App"".v1"."Order Lines; drop" (
    "Id" int primary key, "select" text, "a.b" int, "q""uote" text default 'x'
);
insert into "My ""App"".v1"."Order Lines; drop" values (1, 'one', 1, 'q1'), (2, 'two', 2, 'q2');
select resilience.manage_table('"My ""App"".v1"."Order Lines; drop"');
"""


def test_managed_tables_with_hostile_names_upgrade_and_roll_back(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    table = '"My ""App"".v1"."Order Lines; drop"'
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(HOSTILE)
        tx = _one(conn, "select resilience.tx_begin(600000, 'live')")
        conn.execute(
            "select resilience.tx_execute(%s, %s, 'update', %s, '{\"Id\": 1}')",
            (tx, table, '{"select": "ONE"}'),
        )
        installer.install(bare_dsn)
        rows = f"select * from {table} order by 1"
        assert conn.execute(rows).fetchall() == [(1, "one", 1, "q1"), (2, "two", 2, "q2")]
        tx = _one(conn, "select resilience.tx_begin(600000, 'after')")
        conn.execute(
            "select resilience.tx_execute(%s, %s, 'delete', null, '{\"Id\": 2}')", (tx, table)
        )
        conn.execute(
            "select resilience.tx_execute(%s, %s, 'insert', '{\"Id\": 3, \"a.b\": 3}')", (tx, table)
        )
        assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 2
        assert conn.execute(rows).fetchall() == [(1, "one", 1, "q1"), (2, "two", 2, "q2")]
