"""`pgresilience uninstall` over live state (README "Install"; docs/cli.md):
it removes exactly what install created, refuses while logical transactions
are active (`--force` rolls them back first), and never takes the app's own
objects with it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgresilience import installer

APP = """
create table acct (id int primary key, bal int not null);
insert into acct values (1, 100), (2, 200);
select resilience.manage_table('acct');
"""


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def _app_objects(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return conn.execute(
        "select 'view', relname::text from pg_class where relnamespace = 'public'::regnamespace"
        " and relkind = 'v'"
        " union all select 'policy', polname::text from pg_policy"
        " where polrelid = 'public.notes'::regclass"
        " union all select 'function', proname::text from pg_proc"
        " where pronamespace = 'public'::regnamespace and proname like 'app\\_%'"
        " order by 1, 2"
    ).fetchall()


def test_uninstall_never_drops_the_apps_view_policy_or_function_calling_the_api(dsn, conn):
    conn.execute(
        """
        create table notes (id int primary key, tx uuid);
        alter table notes enable row level security;
        create policy notes_tx_known on notes using (resilience.tx_status(tx) is not null);
        create view app_statuses as
            select n.id, resilience.tx_status(n.tx) as status from notes as n;
        create view app_audit as select t.label, t.status from resilience.transactions as t;
        create function app_begin() returns uuid language sql
            begin atomic select resilience.tx_begin(1000, 'app'); end;
        """
    )
    before = _app_objects(conn)
    assert before == [
        ("function", "app_begin"),
        ("policy", "notes_tx_known"),
        ("view", "app_audit"),
        ("view", "app_statuses"),
    ]
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        installer.uninstall(dsn)
    assert _app_objects(conn) == before
    assert _one(conn, "select version_num from resilience.alembic_version") == "0008"


def test_uninstall_refuses_while_a_transaction_is_active_and_force_restores_its_rows(dsn, conn):
    conn.execute(APP)
    tx = _one(conn, "select resilience.tx_begin(60000, 'live')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')", (tx,)
    )
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'insert', '{\"id\": 3, \"bal\": 3}')", (tx,)
    )
    conn.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    conn.execute("select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 2}')", (tx,))

    with pytest.raises(installer.ActiveTransactions):
        installer.uninstall(dsn)
    assert _one(conn, "select status from resilience.transactions where id = %s", tx) == "active"

    installer.uninstall(dsn, force=True)
    assert conn.execute("select id, bal from acct order by id").fetchall() == [(1, 100), (2, 200)]
    assert _one(conn, "select to_regnamespace('resilience')") is None
    # The app's table is back to a plain table: no trigger of ours left on it.
    assert _one(conn, "select count(*) from pg_trigger where tgrelid = 'acct'::regclass") == 0
    conn.execute("update acct set bal = 5 where id = 1")


def test_uninstall_of_0_1_0_with_live_state_by_head(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(APP)
        tx = _one(conn, "select resilience.tx_begin(60000, 'live')")
        conn.execute(
            "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')",
            (tx,),
        )
        installer.uninstall(bare_dsn, force=True)
        assert conn.execute("select id, bal from acct order by id").fetchall() == [
            (1, 100),
            (2, 200),
        ]
        assert _one(conn, "select to_regnamespace('resilience')") is None
        assert _one(conn, "select count(*) from pg_trigger where tgrelid = 'acct'::regclass") == 0


def test_uninstall_refuses_while_a_failed_transaction_holds_images_and_force_drops_them(dsn, conn):
    """A failed transaction's images are the only record of the rows its
    rollback could not restore (docs/transactions.md): uninstall keeps them
    unless told, like an active transaction's."""
    conn.execute(APP)
    tx = _one(conn, "select resilience.tx_begin(60000, 'will fail')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')", (tx,)
    )
    # A write that bypassed the guards (replica mode) changed the row, so the
    # reaper's rollback fails: `failed`, claims released, images kept.
    conn.execute("set session_replication_role = replica")
    conn.execute("update acct set bal = 7 where id = 1")
    conn.execute("reset session_replication_role")
    conn.execute(
        "update resilience.transactions set started_at = clock_timestamp() - interval '2 seconds',"
        " expires_at = clock_timestamp() - interval '1 second' where id = %s",
        (tx,),
    )
    conn.execute("select resilience.tx_reap()")
    assert _one(conn, "select status from resilience.transactions where id = %s", tx) == "failed"

    with pytest.raises(installer.ActiveTransactions, match=f"1 logical transactions failed.*{tx}"):
        installer.uninstall(dsn)
    assert _one(conn, "select status from resilience.transactions where id = %s", tx) == "failed"

    lines = installer.uninstall(dsn, force=True)
    assert any("dropped the images of 1 failed" in line for line in lines)
    assert _one(conn, "select to_regnamespace('resilience')") is None
    assert conn.execute("select id, bal from acct order by id").fetchall() == [(1, 7), (2, 200)]
