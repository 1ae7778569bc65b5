"""The package's own tables: row-level security on every one of them;
clients read at most their own rows and write none directly (only the API's
SECURITY DEFINER functions do)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import raises_sqlstate
from .sessions import Session


def package_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select c.relname from pg_class c where c.relnamespace = 'resilience'::regnamespace"
        " and c.relkind in ('r', 'p') order by 1"
    ).fetchall()
    return [r[0] for r in rows]


def plain_column(conn: psycopg.Connection[Any], table: str) -> str:
    """A column an UPDATE may set (not identity, not generated)."""
    row = conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
        " and not attisdropped and attidentity = '' and attgenerated = ''"
        " order by attnum limit 1",
        (f"resilience.{table}",),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_every_package_table_has_row_level_security(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "select c.relname, c.relrowsecurity from pg_class c"
        " where c.relnamespace = 'resilience'::regnamespace and c.relkind in ('r', 'p')"
    ).fetchall()
    assert {"settings", "audit_log", "transactions"} <= {name for name, _ in rows}
    assert [name for name, enabled in rows if not enabled] == []


def do_some_work(user: Session) -> str:
    """A begin, a write and a commit: rows in the transactions, images and audit tables."""
    tx_id = str(user.rpc("tx_begin", label=f"work of {user.sub}"))
    user.rpc(
        "tx_execute",
        tx_id=tx_id,
        table_name="public.notes",
        operation="insert",
        data={"body": f"by {user.sub}"},
    )
    user.rpc("tx_commit", tx_id=tx_id)
    return tx_id


def test_clients_read_only_their_own_rows(
    app: psycopg.Connection[Any], user_a: Session, user_b: Session
) -> None:
    do_some_work(user_a)
    tx_of_b = do_some_work(user_b)

    readable = 0
    for table in package_tables(app):
        statement = sql.SQL("select to_jsonb(t) from resilience.{} as t").format(
            sql.Identifier(table)
        )
        try:
            rows = [r[0] for r in user_a.query(statement)]
        except psycopg.errors.InsufficientPrivilege:
            continue  # not readable at all: fine
        readable += 1
        seen = json.dumps(rows)
        assert tx_of_b not in seen, table
        assert "user-b" not in seen, table

    # The audit trail is readable, and it is user-a's own.
    audit = [r[0] for r in user_a.query("select actor_sub from resilience.audit_log")]
    assert audit and set(audit) == {"user-a"}
    assert readable >= 1


@pytest.mark.parametrize("verb", ["insert", "update", "delete", "truncate"])
@pytest.mark.parametrize("who", ["authenticated", "resilience_user member"])
def test_clients_write_no_package_table_directly(
    app: psycopg.Connection[Any],
    user_a: Session,
    make_role: Callable[..., str],
    connect_as: Callable[[str], psycopg.Connection[Any]],
    verb: str,
    who: str,
) -> None:
    do_some_work(user_a)
    if who == "authenticated":
        client = user_a
    else:
        make_role("pgr_sec_client", member_of=("resilience_user",))
        client = Session(connect_as("pgr_sec_client"), "pgr_sec_client", "user-a")

    for table in package_tables(app):
        target = sql.Identifier("resilience", table)
        column = sql.Identifier(plain_column(app, table))
        statement = {
            "insert": sql.SQL("insert into {} default values").format(target),
            "update": sql.SQL("update {} set {} = {}").format(target, column, column),
            "delete": sql.SQL("delete from {}").format(target),
            "truncate": sql.SQL("truncate {}").format(target),
        }[verb]
        count_before = app.execute(sql.SQL("select count(*) from {}").format(target)).fetchone()
        with raises_sqlstate("42501"):
            client.query(statement)
        count_after = app.execute(sql.SQL("select count(*) from {}").format(target)).fetchone()
        assert count_after == count_before, table


def test_clients_cannot_forge_audit_rows_through_internal_helpers(
    app: psycopg.Connection[Any], user_a: Session, user_b: Session
) -> None:
    """The audit trail is written by the API and the capture triggers only:
    every 'execute' row is a statement that really ran. A client can call no
    internal helper that writes audit rows: _audit is refused, and the only
    SECURITY DEFINER helpers a client may execute are the checks tx_execute
    needs, the lock helpers manage_table generates (which claim only rows
    the caller's own statement locked, and audit only that) and the circuit
    store's own."""
    tx_of_a = str(user_a.rpc("tx_begin"))
    count = "select count(*) from resilience.audit_log"
    before = app.execute(count).fetchone()

    with raises_sqlstate("42501"):
        user_b.query("select resilience._audit('commit', %s::uuid, '{}'::jsonb)", (tx_of_a,))
    definers = app.execute(
        "select p.proname from pg_proc as p"
        " where p.pronamespace = 'resilience'::regnamespace and p.proname like '\\_%'"
        " and p.prosecdef and has_function_privilege('resilience_user', p.oid, 'execute')"
        " order by 1"
    ).fetchall()
    names = [name for (name,) in definers]
    allowed = ("_execute_prepare", "_lock_", "_circuit_")
    assert all(n.startswith(allowed) for n in names), names
    assert app.execute(count).fetchone() == before
