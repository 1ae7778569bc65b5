"""A table owner that is not superuser must never run code as the package
owner. Our capture trigger and lock function are SECURITY DEFINER (package
owner); a domain's CHECK runs whenever a value is coerced to the domain. A
domain over a domain names the *inner domain* in pg_type.typbasetype, so an
image typed with "the base type" one layer down still coerced to a domain of
the table owner's, whose CHECK called the owner's function as the package
owner: a superuser install handed superuser to any table owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

# The owner's schema, a domain over a domain whose CHECK logs who evaluates
# it (and, as a superuser, would grant the owner superuser), and a managed
# table with such a column in its key and out of it.
OWNER_SCHEMA = """
create table m.calls (who text, superuser boolean);
create function m.spy(v integer) returns boolean language plpgsql as $$
begin
    insert into m.calls values (current_user,
        (select r.rolsuper from pg_catalog.pg_roles as r where r.rolname = current_user));
    if (select r.rolsuper from pg_catalog.pg_roles as r where r.rolname = current_user) then
        execute pg_catalog.format('alter role %I superuser', session_user);
    end if;
    return v > 0;
end;
$$;
grant execute on function m.spy(integer) to public;
grant insert on m.calls to public;
create domain m.inner_positive as integer check (m.spy(value));
create domain m.positive as m.inner_positive;
create table m.t (id m.positive primary key, v m.positive, note text);
select resilience.manage_table('m.t');
"""


@pytest.fixture
def owner(conn: psycopg.Connection[Any], make_role: Callable[..., str]) -> psycopg.Connection[Any]:
    """A login role that owns schema m and a managed table there, member of
    resilience_user, not superuser."""
    owner_dsn = make_role("breaksec_owner", member_of=("resilience_user",))
    conn.execute("alter role breaksec_owner nosuperuser")
    conn.execute("create schema m authorization breaksec_owner")
    owner_conn = psycopg.connect(owner_dsn, autocommit=True)
    owner_conn.execute(OWNER_SCHEMA)
    return owner_conn


def _evaluators(conn: psycopg.Connection[Any]) -> set[tuple[str, bool]]:
    return {(row[0], row[1]) for row in conn.execute("select who, superuser from m.calls")}


def test_nested_domain_check_never_runs_as_package_owner(
    conn: psycopg.Connection[Any], owner: psycopg.Connection[Any]
) -> None:
    with owner:
        tx = owner.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        owner.execute(
            "select resilience.tx_execute(%s, 'm.t', 'insert', '{\"id\": 1, \"v\": 5}')", (tx,)
        )
        owner.execute(
            "select resilience.tx_execute(%s, 'm.t', 'update', '{\"v\": 6}', '{\"id\": 1}')", (tx,)
        )
        owner.execute("select resilience.tx_execute(%s, 'm.t', 'lock', null, '{\"id\": 1}')", (tx,))
        owner.execute("select resilience.tx_rollback(%s)", (tx,))
        tx = owner.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        owner.execute(
            "select resilience.tx_execute(%s, 'm.t', 'insert', '{\"id\": 2, \"v\": 7}')", (tx,)
        )
        owner.execute("select resilience.tx_commit(%s)", (tx,))
        tx = owner.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        owner.execute("select resilience.tx_execute(%s, 'm.t', 'lock', null, '{\"v\": 7}')", (tx,))
        owner.execute(
            "select resilience.tx_execute(%s, 'm.t', 'delete', null, '{\"id\": 2}')", (tx,)
        )
        owner.execute("select resilience.tx_rollback(%s)", (tx,))
    assert not conn.execute(
        "select rolsuper from pg_roles where rolname = 'breaksec_owner'"
    ).fetchone()[0]  # type: ignore[index]
    # Only the owner's own statements (and its own undo) coerce to its domain.
    assert _evaluators(conn) == {("breaksec_owner", False)}
    assert conn.execute("select id, v from m.t order by id").fetchall() == [(2, 7)]


def test_nested_domain_images_hold_the_innermost_base_type(
    conn: psycopg.Connection[Any], owner: psycopg.Connection[Any]
) -> None:
    """Also what makes a NOT NULL inner domain harmless for an insert's empty
    before-image: the image and key columns are plain integers."""
    types = conn.execute(
        "select a.attname, a.atttypid::regtype::text from pg_attribute as a"
        " where a.attnum > 0 and not a.attisdropped and a.attrelid = ("
        "  select t.typrelid from pg_type as t where t.oid = ("
        "   select m.image_type from resilience.managed_tables as m"
        "   where m.relation = 'm.t'::regclass))"
        " order by a.attnum"
    ).fetchall()
    assert types == [("c1", "integer"), ("c2", "integer"), ("c3", "text")]
    key = conn.execute(
        "select a.atttypid::regtype::text from pg_attribute as a"
        " where a.attname = 'k1' and a.attrelid = ("
        "  select m.image_table from resilience.managed_tables as m"
        "  where m.relation = 'm.t'::regclass)"
    ).fetchone()
    assert key == ("integer",)
