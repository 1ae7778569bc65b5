"""Installed by a database owner that is not superuser, the package owner
is an ordinary role: a table owner's code (triggers, RLS policy functions)
must never run with its rights. It did twice: when the package owner could
not hand a table's undo to the table owner (not a member of its role),
manage_table only warned and the undo, with the table's triggers, ran as
the package owner; and the lock function (SECURITY DEFINER, package owner)
read the table under the table owner's RLS policies."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgresilience import installer

from .conftest import raises_sqlstate

TABLE_OWNER_SCHEMA = """
create table m.calls (who text);
grant insert on m.calls to public;
create function m.spy_trigger() returns trigger language plpgsql as $$
begin
    insert into m.calls values (current_user);
    return null;
end;
$$;
create function m.spy_policy() returns boolean language plpgsql as $$
begin
    insert into m.calls values (current_user);
    return true;
end;
$$;
grant execute on function m.spy_trigger(), m.spy_policy() to public;
create table m.t (id integer primary key, v integer);
create trigger spy after insert or update or delete on m.t
    for each statement execute function m.spy_trigger();
alter table m.t enable row level security;
create policy everyone on m.t using (m.spy_policy());
-- What the attack needs from the package owner's side, granted by the attacker.
grant usage on schema m to breaksec_dbowner;
grant all on m.t to breaksec_dbowner;
"""


@pytest.fixture
def owner_db(server: Any, template_db: str, make_role: Callable[..., str]) -> Iterator[str]:
    """A database owned and installed by breaksec_dbowner (not superuser), with
    schema m of breaksec_tableowner (not superuser, member of resilience_user)."""
    make_role("breaksec_dbowner")
    make_role("breaksec_tableowner", member_of=("resilience_user",))
    name = f"pgr_breaksec_{uuid.uuid4().hex[:10]}"
    server.create_database(name, owner="breaksec_dbowner")
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as admin:
            admin.execute("alter schema public owner to breaksec_dbowner")
            admin.execute("create schema m authorization breaksec_tableowner")
        installer.install(server.dsn(name, user="breaksec_dbowner"))
        with psycopg.connect(server.dsn(name, user="breaksec_tableowner"), autocommit=True) as c:
            c.execute(TABLE_OWNER_SCHEMA)
        yield name
    finally:
        with server.admin() as admin:
            admin.execute(
                sql.SQL("revoke {} from {}").format(
                    sql.Identifier("breaksec_tableowner"), sql.Identifier("breaksec_dbowner")
                )
            )
        server.drop_database(name)


def _callers(server: Any, name: str) -> set[str]:
    with psycopg.connect(server.dsn(name), autocommit=True) as admin:
        return {row[0] for row in admin.execute("select who from m.calls")}


def test_manage_table_refuses_an_undo_that_would_run_as_the_package_owner(
    server: Any, owner_db: str
) -> None:
    with psycopg.connect(server.dsn(owner_db, user="breaksec_tableowner"), autocommit=True) as c:
        with raises_sqlstate("42501"):
            c.execute("select resilience.manage_table('m.t')")
        assert c.execute("select count(*) from resilience.managed_tables").fetchone() == (0,)
        with raises_sqlstate("22023"):
            tx = c.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
            c.execute("select resilience.tx_execute(%s, 'm.t', 'insert', '{\"id\": 1}')", (tx,))
    assert "breaksec_dbowner" not in _callers(server, owner_db)


def test_lock_never_runs_the_table_owners_policies_as_the_package_owner(
    server: Any, owner_db: str
) -> None:
    """Once the package owner may hand the undo over (a member of the table
    owner's role, which also exempts it from the table's RLS), the table is
    managed; its undo and triggers run as the table owner. Should that
    membership go, the lock refuses (42501) rather than evaluate the
    table's policies as the package owner."""
    with server.admin() as admin:
        admin.execute("grant breaksec_tableowner to breaksec_dbowner")
    with psycopg.connect(server.dsn(owner_db, user="breaksec_tableowner"), autocommit=True) as c:
        c.execute("select resilience.manage_table('m.t')")
        tx = c.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        c.execute(
            "select resilience.tx_execute(%s, 'm.t', 'insert', '{\"id\": 1, \"v\": 1}')", (tx,)
        )
        c.execute("select resilience.tx_execute(%s, 'm.t', 'lock', null, '{\"v\": 1}')", (tx,))
        c.execute("select resilience.tx_rollback(%s)", (tx,))
        assert c.execute("select count(*) from m.t").fetchone() == (0,)
        # The table owner may not create anything in schema resilience.
        assert c.execute("select has_schema_privilege('resilience', 'create')").fetchone() == (
            False,
        )
        c.execute("insert into m.t values (2, 2)")
        with server.admin() as admin:
            admin.execute("revoke breaksec_tableowner from breaksec_dbowner")
    # A new session: on PostgreSQL 14, 16, 17 and 18 (not 15) the session
    # that locked before the revoke was not refused (likely its plan, cached
    # while the membership held, which applies no policy at all).
    with psycopg.connect(server.dsn(owner_db, user="breaksec_tableowner"), autocommit=True) as c:
        tx = c.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        with raises_sqlstate("42501"):
            c.execute("select resilience.tx_execute(%s, 'm.t', 'lock', null, '{\"v\": 2}')", (tx,))
    assert _callers(server, owner_db) == {"breaksec_tableowner"}
