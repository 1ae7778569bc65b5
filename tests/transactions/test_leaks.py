"""No leaks, no forgery (issue 10, item 4).

Images hold rows the caller could not read: a column without SELECT grant,
and rows hidden by another user's RLS that an FK cascade deleted. A client
(PostgREST's `authenticated`, sub user-a) must find nothing of them anywhere:
tx_execute results, tx_status, tx_active, error messages, the audit trail,
every table of ours it may SELECT and every function it may EXECUTE (both
enumerated from the catalog, so a new one is covered the day it appears).
tx_images is for resilience_admin only. No function lets a client add audit
rows: every audit row comes from what really ran."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from security.sessions import Session

SECRETS = ("SECRET-SSN-123", "HIDDEN-KID-SECRET")

SCHEMA = """
create table accounts (id integer primary key, owner text, note text, ssn text);
grant select (id, owner, note), insert (id, owner, note), update (note), delete
    on accounts to authenticated;
insert into accounts values (1, 'user-a', 'n', 'SECRET-SSN-123');

create table parents (id integer primary key, owner text);
create table kids (id integer primary key,
    parent_id integer references parents (id) on delete cascade, owner text, secret text);
alter table kids enable row level security;
create policy kids_own on kids to authenticated
    using (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
grant all on parents, kids to authenticated;
grant usage on schema public to authenticated;
insert into parents values (1, 'user-a');
insert into kids values (1, 1, 'user-b', 'HIDDEN-KID-SECRET'), (2, 1, 'user-a', 'visible');

select resilience.manage_table('accounts');
select resilience.manage_table('parents');
select resilience.manage_table('kids');
"""

# Functions whose job is to write audit rows for what they really do.
PUBLIC_API = {
    "tx_begin",
    "tx_execute",
    "tx_savepoint",
    "tx_rollback_to",
    "tx_commit",
    "tx_rollback",
    "tx_status",
    "tx_active",
    "tx_reap",
    "tx_run",
    "tx_pre_request",
    "tx_images",
    "manage_table",
    "unmanage_table",
}


def error_text(error: psycopg.Error) -> str:
    d = error.diag
    return " ".join(
        filter(None, [str(error), d.message_primary, d.message_detail, d.message_hint, d.context])
    )


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} visible through {where}: {text[:500]}"


@pytest.fixture
def world(conn: psycopg.Connection[Any], server: Any, database: str) -> Iterator[dict[str, Any]]:
    """user-a's logical transaction after writing the secret row (header
    mode, a column it cannot read) and deleting a parent (cascading into
    user-b's hidden kid)."""
    conn.execute(SCHEMA)
    client = psycopg.connect(server.dsn(database, user="authenticator"), autocommit=True)
    user_a = Session(client, "authenticated", "user-a")
    tx = str(user_a.rpc("tx_begin"))
    header = Session(client, "authenticated", "user-a", headers={"x-resilience-tx": tx})
    header.query("update accounts set note = 'changed' where id = 1")
    deleted = user_a.rpc(
        "tx_execute", tx_id=tx, table_name="parents", operation="delete", match={"id": 1}
    )
    assert conn.execute("select count(*) from kids").fetchone() == (0,)  # the cascade ran
    yield {"conn": conn, "client": client, "user_a": user_a, "tx": tx, "deleted": deleted}
    client.close()


def test_results_status_and_audit_show_nothing_hidden(world):
    user_a, tx = world["user_a"], world["tx"]
    assert_no_secret(json.dumps(world["deleted"]), "tx_execute result (cascade)")
    try:
        result = user_a.rpc(
            "tx_execute",
            tx_id=tx,
            table_name="accounts",
            operation="update",
            data={"note": "again"},
            match={"id": 1},
        )
        assert_no_secret(json.dumps(result), "tx_execute result (ungranted column)")
        assert all("ssn" not in row for row in result["data"])
    except psycopg.Error as error:  # refusing to return the row is fine, leaking it is not
        assert error.sqlstate == "42501", error_text(error)
        assert_no_secret(error_text(error), "tx_execute error")
    assert_no_secret(json.dumps(user_a.rpc("tx_status", tx_id=tx)), "tx_status")
    assert_no_secret(json.dumps(user_a.rpc_set("tx_active")), "tx_active")
    audit = user_a.query("select to_jsonb(a)::text from resilience.audit_log as a")
    assert audit, "user-a reads its own audit rows"
    assert_no_secret(" ".join(r[0] for r in audit), "audit_log")


def test_rollback_errors_and_results_show_nothing_hidden(world):
    conn, user_a, tx = world["conn"], world["user_a"], world["tx"]
    # Someone re-uses the hidden kid's key behind the guards (an admin with
    # triggers off): user-a's rollback conflicts on it.
    conn.execute("set session_replication_role = replica")
    conn.execute("insert into parents values (9, 'admin')")
    conn.execute("insert into kids values (1, 9, 'user-b', 'other')")
    conn.execute("set session_replication_role = origin")
    with pytest.raises(psycopg.Error) as caught:
        user_a.rpc("tx_rollback", tx_id=tx)
    assert caught.value.sqlstate == "RZ005"
    assert_no_secret(error_text(caught.value), "rollback conflict error")
    forced = user_a.rpc("tx_rollback", tx_id=tx, force=True)
    assert_no_secret(json.dumps(forced), "forced rollback result")
    audit = user_a.query("select to_jsonb(a)::text from resilience.audit_log as a")
    assert_no_secret(" ".join(r[0] for r in audit), "audit_log after the conflict")


def readable_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("""
        select c.oid::regclass::text from pg_class as c
        where c.relnamespace in ('resilience'::regnamespace, 'public'::regnamespace)
            and c.relkind in ('r', 'p', 'v', 'm')
            and c.relname not in ('accounts', 'parents', 'kids')
            and has_any_column_privilege('authenticated', c.oid, 'SELECT')
        order by 1
    """).fetchall()
    return [r[0] for r in rows]


def test_no_table_a_client_can_read_holds_hidden_data(world):
    conn, user_a = world["conn"], world["user_a"]
    for table in readable_tables(conn):
        columns = conn.execute(
            "select array_agg(quote_ident(attname)) from pg_attribute where attrelid = %s::regclass"
            " and attnum > 0 and not attisdropped"
            " and has_column_privilege('authenticated', attrelid, attnum, 'SELECT')",
            (table,),
        ).fetchone()[0]
        statement = sql.SQL("select row({})::text from {} as t").format(
            sql.SQL(", ").join(sql.SQL(c) for c in columns), sql.SQL(table)
        )
        rows = user_a.query(statement)
        assert_no_secret(" ".join(r[0] for r in rows), f"table {table}")


def callable_functions(
    conn: psycopg.Connection[Any],
) -> list[tuple[str, str, list[str], list[str]]]:
    """(schema, name, argument names, argument types) of every function of
    ours (and every wrapper in the exposed schema) `authenticated` may run."""
    rows = conn.execute("""
        select n.nspname, p.proname,
            coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, array[p.pronargs])),
            array(select format_type(t, null) from unnest(p.proargtypes) as t)
        from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
        where n.nspname in ('resilience', 'public') and p.prokind = 'f'
            and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
            and has_function_privilege('authenticated', p.oid, 'EXECUTE')
        order by 1, 2
    """).fetchall()
    return [(r[0], r[1], list(r[2]), list(r[3])) for r in rows]


def forged_arguments(tx: str, names: list[str], types: list[str]) -> list[sql.Composable]:
    """Plausible values a client would pass: its own transaction, our tables,
    invented counts and operations."""
    values = {
        "uuid": tx,
        "regclass": "kids",
        "integer": "100",
        "bigint": "100",
        "smallint": "1",
        "boolean": "false",
        "timestamp with time zone": "now",
        "numeric": "1",
    }
    out: list[sql.Composable] = []
    for name, type_name in zip(names, types, strict=True):
        if type_name == "jsonb" or type_name == "json":
            value = {
                "operations": '[{"table": "kids", "operation": "delete", "match": {"id": 2}}]',
                "data": '{"id": 5, "owner": "user-a"}',
                "match": '{"id": 1}',
            }.get(name, "{}")
        elif type_name in ("text", "name", "character varying"):
            value = {
                "operation": "insert",
                "event": "execute",
                "table_name": "kids",
                "name": "sp",
            }.get(name, "kids")
        else:
            value = values.get(type_name)  # type: ignore[assignment]
        out.append(sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(type_name)))
    return out


def call_as(
    session: Session, schema: str, name: str, args: list[sql.Composable], commit: bool
) -> str:
    """Call the function as the client; its output and any error, as text."""
    statement = sql.SQL("select x::text from {}.{}({}) as x").format(
        sql.Identifier(schema), sql.Identifier(name), sql.SQL(", ").join(args)
    )
    conn = session.conn
    try:
        with conn.transaction(force_rollback=not commit):
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(session.role)))
            conn.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"role": session.role, "sub": session.sub}),),
            )
            with conn.transaction():
                rows = conn.execute(statement).fetchall()
        return " ".join(str(r[0]) for r in rows)
    except psycopg.Error as error:
        return error_text(error)


def audit_count(conn: psycopg.Connection[Any], tx: str) -> tuple[int, int]:
    row = conn.execute(
        "select count(*), count(*) filter (where tx_id = %s) from resilience.audit_log", (tx,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_no_function_a_client_can_run_shows_hidden_data_or_forges_audit(world):
    conn, user_a, tx = world["conn"], world["user_a"], world["tx"]
    functions = callable_functions(conn)
    assert any(f[1] == "tx_execute" for f in functions)  # the enumeration works
    for schema, name, names, types in functions:
        args = forged_arguments(tx, names, types)
        if name in PUBLIC_API or name.startswith(("schema_", "circuit_")):
            # Run, look, and throw away what it did.
            output = call_as(user_a, schema, name, args, commit=False)
            assert_no_secret(output, f"{schema}.{name}")
            continue
        before = audit_count(conn, tx)
        output = call_as(user_a, schema, name, args, commit=True)
        assert_no_secret(output, f"{schema}.{name}")
        assert audit_count(conn, tx) == before, f"{schema}.{name} wrote audit rows: {output[:300]}"


def test_a_client_cannot_add_execute_rows_to_its_own_audit(world):
    """Today's hole, named: _execute_done adds invented `execute` rows."""
    conn, user_a, tx = world["conn"], world["user_a"], world["tx"]
    before = audit_count(conn, tx)
    for statement in (
        "select resilience._execute_done(%s, 'kids'::regclass, 'delete', 1000000, now())",
        'select resilience._audit(\'execute\', %s, \'{"table": "kids", "rows": 1000000}\')',
    ):
        try:
            user_a.query(statement, (tx,))
        except psycopg.Error as error:
            assert error.sqlstate in ("42501", "42883"), error_text(error)
    assert audit_count(conn, tx) == before


def test_tx_images_is_for_resilience_admin_only(world, make_role):
    user_a, tx = world["user_a"], world["tx"]
    with pytest.raises(psycopg.Error) as caught:
        user_a.rpc_set("tx_images", tx_id=tx)
    assert caught.value.sqlstate == "42501"
    assert_no_secret(error_text(caught.value), "tx_images error")

    admin_dsn = make_role("leaks_admin", member_of=("resilience_admin",))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        images = admin.execute("select * from resilience.tx_images(%s)", (tx,)).fetchall()
    text = json.dumps([list(map(str, r)) for r in images])
    # The admin sees every captured row, the hidden ones included.
    assert "HIDDEN-KID-SECRET" in text and "SECRET-SSN-123" in text
