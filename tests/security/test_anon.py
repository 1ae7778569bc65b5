"""`anon` (PostgREST's role for requests without a JWT) can call nothing of
pgresilience: neither the functions of schema resilience nor their wrappers in
the exposed schema, unless someone grants it explicitly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from .conftest import raises_sqlstate
from .sessions import Session

# Every callable function of ours and every exposed wrapper, as a call with
# null arguments (the privilege check comes before any argument is looked at).
CALLABLES = """
select p.oid::regprocedure::text,
    format('select %I.%I(%s)', n.nspname, p.proname,
        (select string_agg(format('null::%s', format_type(t, null)), ', ' order by i)
            from unnest(p.proargtypes) with ordinality as a (t, i)))
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where (n.nspname = 'resilience'
        or p.oid in (select signature from resilience.exposed_functions))
    and p.prokind = 'f'
    and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
order by 1
"""


def callables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(CALLABLES)]


def test_anon_holds_no_execute_privilege(conn: psycopg.Connection[Any]) -> None:
    functions = callables(conn)
    assert any(name.startswith("tx_begin(") for name, _ in functions)
    assert any(name.startswith("resilience.tx_begin(") for name, _ in functions)
    granted = [
        name
        for name, _ in functions
        if conn.execute("select has_function_privilege('anon', %s, 'execute')", (name,)).fetchone()
        == (True,)
    ]
    assert granted == []


def test_anon_calls_fail_with_permission_denied(
    conn: psycopg.Connection[Any], session: Callable[..., Session]
) -> None:
    anon = session(None, role="anon")
    for _name, call in callables(conn):
        with raises_sqlstate("42501"):
            anon.query(call)
    assert conn.execute("select count(*) from resilience.transactions").fetchone() == (0,)


def test_anon_can_call_what_is_explicitly_granted(conn: psycopg.Connection[Any]) -> None:
    """The denial comes from grants alone: grant tx_begin to anon (inside a
    transaction that is rolled back) and the same call works."""
    signature = conn.execute("select 'resilience.tx_begin'::regproc::oid::regprocedure::text")
    tx_begin = signature.fetchone()
    assert tx_begin is not None
    with conn.transaction(force_rollback=True):
        conn.execute("grant usage on schema resilience to anon")
        conn.execute(sql.SQL("grant execute on function {} to anon").format(sql.SQL(tx_begin[0])))
        conn.execute("set local role anon")
        tx_id = conn.execute("select resilience.tx_begin()").fetchone()
        assert tx_id is not None and tx_id[0] is not None
