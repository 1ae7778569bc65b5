"""What the app built on the package survives `pgresilience install` run
again (idempotent, README "Install") and the upgrade from 0.1.0: grants it
added on the exposed wrappers, views and policies calling the API, its own
triggers calling package functions, its own tables named like ours."""

from __future__ import annotations

import shutil
from typing import Any

import psycopg
import pytest
from releases import ROOT

from pgresilience import installer

WRAPPER_GRANTS = """
select p.oid::regprocedure::text, acl.grantee::regrole::text
from pg_proc as p, aclexplode(p.proacl) as acl
where p.pronamespace = 'public'::regnamespace and acl.grantee <> 0
    and acl.grantee::regrole::text in ('anon', 'app_reporter')
order by 1, 2
"""

APP_ON_THE_API = """
create view my_open_transactions as select t from public.tx_active() as t;
create table notes (id int primary key, tx uuid, body text);
alter table notes enable row level security;
create policy notes_in_my_tx on notes using (tx is null or resilience.tx_status(tx) is not null);
create function note_stamp() returns trigger language plpgsql as $$
begin
    new.body := new.body || ' (' || (select count(*) from resilience.tx_active()) || ' open)';
    return new;
end;
$$;
create trigger note_stamp before insert on notes for each row execute function note_stamp();
"""


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def test_reinstall_keeps_the_grants_the_app_added_on_the_exposed_wrappers(dsn, conn, make_role):
    make_role("app_reporter", login=False)
    # The app lets anon read its transaction's status, and a reporting role
    # list active transactions: the README's wrappers, the app's grants.
    conn.execute("grant execute on function public.tx_status(uuid) to anon")
    conn.execute("grant execute on function public.tx_active() to app_reporter")
    before = conn.execute(WRAPPER_GRANTS).fetchall()
    assert before == [("tx_active()", "app_reporter"), ("tx_status(uuid)", "anon")]

    installer.install(dsn)

    assert conn.execute(WRAPPER_GRANTS).fetchall() == before


def test_reinstall_keeps_the_revokes_the_app_made_on_the_exposed_wrappers(dsn, conn):
    # The app keeps signed-in users from opening transactions through rpc()
    # (its own server code calls them): installing again must not hand the
    # wrapper back to them.
    conn.execute("revoke execute on function public.tx_begin(integer, text) from authenticated")
    conn.execute("revoke execute on function public.tx_begin(integer, text) from resilience_user")
    wrapper_privileges = """
        select has_function_privilege('authenticated', 'public.tx_begin(integer, text)', 'execute'),
            has_function_privilege('resilience_user', 'public.tx_begin(integer, text)', 'execute'),
            has_function_privilege('authenticated', 'public.tx_status(uuid)', 'execute')
    """
    assert conn.execute(wrapper_privileges).fetchone() == (False, False, True)

    installer.install(dsn)

    assert conn.execute(wrapper_privileges).fetchone() == (False, False, True)


def test_reinstall_keeps_a_view_and_a_policy_over_the_api(dsn, conn):
    conn.execute(APP_ON_THE_API)
    tx = _one(conn, "select tx_begin(60000, 'app')")

    installer.install(dsn)

    assert [r[0]["id"] for r in conn.execute("select t from my_open_transactions")] == [str(tx)]
    conn.execute("insert into notes values (1, %s, 'hello')", (tx,))
    assert conn.execute("select id, body from notes").fetchall() == [(1, "hello (1 open)")]


def test_upgrade_from_0_1_0_keeps_the_apps_view_policy_trigger_and_wrapper_grants(
    bare_dsn, install_0_1_0, make_role
):
    install_0_1_0(bare_dsn)
    make_role("app_reporter", login=False)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(APP_ON_THE_API)
        conn.execute("grant execute on function public.tx_status(uuid) to anon")
        conn.execute("grant execute on function public.tx_active() to app_reporter")

        installer.install(bare_dsn)

        assert conn.execute(WRAPPER_GRANTS).fetchall() == [
            ("tx_active()", "app_reporter"),
            ("tx_status(uuid)", "anon"),
        ]
        tx = _one(conn, "select tx_begin(60000, 'app')")
        assert [r[0]["id"] for r in conn.execute("select t from my_open_transactions")] == [str(tx)]
        conn.execute("insert into notes values (1, %s, 'hello')", (tx,))
        assert conn.execute("select id, body from notes").fetchall() == [(1, "hello (1 open)")]


HOSTILE_LOOKALIKES = """
create schema "Resilience";
create table public.transactions (id uuid primary key, status text);
create table public.alembic_version (version_num varchar(32) primary key);
insert into public.alembic_version values ('app_rev_42');
create table public.settings (name text primary key, value text);
create table "Resilience".managed_tables (relation regclass primary key);
create table public.audit_log (id bigint primary key, event text);
insert into public.transactions values ('00000000-0000-0000-0000-000000000001', 'active');
"""


@pytest.mark.parametrize("first", ["0.1.0", "HEAD"])
def test_upgrade_ignores_the_apps_tables_named_like_ours(first, bare_dsn, install_0_1_0):
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(HOSTILE_LOOKALIKES)
        # The installing role finds the app's tables first on its search_path.
        conn.execute("select set_config('search_path', 'public, \"Resilience\"', false)")
        conn.execute(
            psycopg.sql.SQL('alter database {} set search_path = public, "Resilience"').format(
                psycopg.sql.Identifier(conn.info.dbname)
            )
        )
        if first == "0.1.0":
            install_0_1_0(bare_dsn)
        else:
            installer.install(bare_dsn)
        conn.execute("create table acct (id int primary key, bal int)")
        conn.execute("select resilience.manage_table('acct')")

        installer.install(bare_dsn)

        assert conn.execute("select * from public.alembic_version").fetchall() == [("app_rev_42",)]
        assert conn.execute("select id::text, status from public.transactions").fetchall() == [
            ("00000000-0000-0000-0000-000000000001", "active")
        ]
        assert conn.execute('select count(*) from "Resilience".managed_tables').fetchone() == (0,)
        assert _one(conn, "select version_num from resilience.alembic_version") == installer_head(
            conn
        )
        tx = _one(conn, "select resilience.tx_begin(60000, 'x')")
        conn.execute(
            "select resilience.tx_execute(%s, 'acct', 'insert', '{\"id\": 1, \"bal\": 1}')", (tx,)
        )
        assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 1
        assert conn.execute("select count(*) from acct").fetchone() == (0,)


def installer_head(conn: psycopg.Connection[Any]) -> str:
    return "0008"


WRAPPER_ACLS = """
select p.oid::regprocedure::text, coalesce(p.proacl::text[], '{}')
from resilience.exposed_functions as e join pg_proc as p on p.oid = e.signature
order by 1
"""


def test_wrappers_kept_by_the_upgrade_from_0_1_0_have_the_grants_of_a_fresh_install(
    bare_dsn, install_0_1_0, conn
):
    """0.1.0 granted `authenticated` schema tracking; HEAD does not: a wrapper
    the upgrade keeps loses that grant as its function does."""
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as upgraded:
        assert _one(
            upgraded,
            "select has_function_privilege('authenticated', 'public.schema_current()', 'execute')",
        )
        installer.install(bare_dsn)
        assert upgraded.execute(WRAPPER_ACLS).fetchall() == conn.execute(WRAPPER_ACLS).fetchall()


APP_GRANTS_ON_THE_API = """
select p.oid::regprocedure::text from pg_proc as p
where p.pronamespace = 'resilience'::regnamespace
    and has_function_privilege('app_worker', p.oid, 'execute')
order by 1
"""


@pytest.mark.parametrize("first", ["0.1.0", "HEAD"])
def test_upgrade_keeps_the_grants_the_app_gave_its_own_role_on_the_api(
    first, bare_dsn, install_0_1_0, make_role
):
    make_role("app_worker")
    if first == "0.1.0":
        install_0_1_0(bare_dsn)
    else:
        installer.install(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        # Not a member of resilience_user: the app grants what its worker calls.
        conn.execute("grant usage on schema resilience to app_worker")
        conn.execute(
            "grant execute on function resilience.tx_begin(integer, text),"
            " resilience.tx_status(uuid), resilience.tx_rollback(uuid, text, boolean) to app_worker"
        )
        installer.install(bare_dsn)
        assert conn.execute(APP_GRANTS_ON_THE_API).fetchall() == [
            ("resilience.tx_begin(integer,text)",),
            ("resilience.tx_rollback(uuid,text,boolean)",),
            ("resilience.tx_status(uuid)",),
        ]
        assert _one(conn, "select has_schema_privilege('app_worker', 'resilience', 'usage')")


@pytest.fixture
def next_release_reshaping_tx_status(tmp_path, monkeypatch):
    """A copy of this release's sql/ where tx_status gains a parameter (the
    installer reads it instead)."""
    sql = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql)
    source = sql / "10_transactions.sql"
    text = source.read_text(encoding="utf-8")
    old = "create or replace function resilience.tx_status(tx_id uuid)"
    assert text.count(old) == 1
    new = old.replace("tx_id uuid", "tx_id uuid, verbose boolean default false")
    source.write_text(text.replace(old, new), encoding="utf-8")
    original = installer.data_path
    monkeypatch.setattr(
        installer, "data_path", lambda name: sql if name == "sql" else original(name)
    )


WRAPPERS_OF_TX_STATUS = """
select p.oid::regprocedure::text from pg_proc as p
where p.proname = 'tx_status' and p.pronamespace = 'public'::regnamespace
"""


def test_a_reshaped_function_replaces_its_wrapper_and_an_app_view_on_it_stops_the_upgrade(
    dsn, conn, next_release_reshaping_tx_status
):
    conn.execute("create view app_status as select public.tx_status(null::uuid) as s")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        installer.install(dsn)
    # Nothing changed: the old wrapper and the app's view are in place.
    assert conn.execute(WRAPPERS_OF_TX_STATUS).fetchall() == [("tx_status(uuid)",)]
    assert _one(conn, "select to_regclass('app_status') is not null")

    conn.execute("drop view app_status")
    installer.install(dsn)
    assert conn.execute(WRAPPERS_OF_TX_STATUS).fetchall() == [("tx_status(uuid,boolean)",)]
