"""SECURITY DEFINER functions pin their search_path, and every function of
ours qualifies every name it uses: an attacker who puts look-alike functions,
operators and tables first on the search_path (or in pg_temp, which is
searched first for tables even under an empty search_path) never gets them
called. Each look-alike writes to attacker.calls when it runs, then behaves
like the original, so a hijack would be seen rather than break the call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from .sessions import Session


def test_every_security_definer_function_pins_an_empty_search_path(
    conn: psycopg.Connection[Any],
) -> None:
    rows = conn.execute(
        "select p.oid::regprocedure::text, coalesce(p.proconfig, '{}') from pg_proc p"
        " where p.pronamespace = 'resilience'::regnamespace and p.prosecdef order by 1"
    ).fetchall()
    assert len(rows) >= 5  # the API is made of them
    unpinned = [name for name, config in rows if 'search_path=""' not in config]
    assert unpinned == []


# Look-alikes of built-ins the implementation is likely to use. Functions with
# the same argument types win because attacker comes before pg_catalog on the
# path; exact-type overloads (e.g. format(text, text) against
# format(text, variadic "any")) would win from anywhere on the path.
ATTACKER = r"""
create schema attacker;
grant usage on schema attacker to public;
create table attacker.calls (what text not null);
grant insert, select on attacker.calls to public;

create function attacker.hit(what text) returns boolean
language sql volatile as $$
    insert into attacker.calls (what) values (what);
    select true;
$$;

create function attacker.now() returns timestamptz language sql volatile
    as $$ select attacker.hit('now()') and true; select pg_catalog.now() $$;
create function attacker.clock_timestamp() returns timestamptz language sql volatile
    as $$ select attacker.hit('clock_timestamp()'); select pg_catalog.clock_timestamp() $$;
create function attacker.statement_timestamp() returns timestamptz language sql volatile
    as $$ select attacker.hit('statement_timestamp()'); select pg_catalog.statement_timestamp() $$;
create function attacker.gen_random_uuid() returns uuid language sql volatile
    as $$ select attacker.hit('gen_random_uuid()'); select pg_catalog.gen_random_uuid() $$;
create function attacker.current_setting(text) returns text language sql volatile
    as $$ select attacker.hit('current_setting(text)'); select pg_catalog.current_setting($1) $$;
create function attacker.current_setting(text, boolean) returns text language sql volatile
    as $$ select attacker.hit('current_setting(text, boolean)');
          select pg_catalog.current_setting($1, $2) $$;
create function attacker.set_config(text, text, boolean) returns text language sql volatile
    as $$ select attacker.hit('set_config'); select pg_catalog.set_config($1, $2, $3) $$;
create function attacker.format(text, text) returns text language sql volatile
    as $$ select attacker.hit('format(text, text)'); select pg_catalog.format($1, $2) $$;
create function attacker.format(text, text, text) returns text language sql volatile
    as $$ select attacker.hit('format(text, text, text)'); select pg_catalog.format($1, $2, $3) $$;
create function attacker.jsonb_build_object(text, text) returns jsonb language sql volatile
    as $$ select attacker.hit('jsonb_build_object(text, text)');
          select pg_catalog.jsonb_build_object($1, $2) $$;
create function attacker.jsonb_build_object(text, jsonb) returns jsonb language sql volatile
    as $$ select attacker.hit('jsonb_build_object(text, jsonb)');
          select pg_catalog.jsonb_build_object($1, $2) $$;
create function attacker.jsonb_build_object(text, boolean) returns jsonb language sql volatile
    as $$ select attacker.hit('jsonb_build_object(text, boolean)');
          select pg_catalog.jsonb_build_object($1, $2) $$;
create function attacker.to_jsonb(anyelement) returns jsonb language sql volatile
    as $$ select attacker.hit('to_jsonb'); select pg_catalog.to_jsonb($1) $$;
create function attacker.jsonb_typeof(jsonb) returns text language sql volatile
    as $$ select attacker.hit('jsonb_typeof'); select pg_catalog.jsonb_typeof($1) $$;
create function attacker.jsonb_array_length(jsonb) returns integer language sql volatile
    as $$ select attacker.hit('jsonb_array_length'); select pg_catalog.jsonb_array_length($1) $$;
create function attacker.jsonb_array_elements(jsonb) returns setof jsonb language sql volatile
    as $$ select attacker.hit('jsonb_array_elements');
          select pg_catalog.jsonb_array_elements($1) $$;
create function attacker.jsonb_object_keys(jsonb) returns setof text language sql volatile
    as $$ select attacker.hit('jsonb_object_keys'); select pg_catalog.jsonb_object_keys($1) $$;
create function attacker.to_regclass(text) returns regclass language sql volatile
    as $$ select attacker.hit('to_regclass'); select pg_catalog.to_regclass($1) $$;
create function attacker.quote_ident(text) returns text language sql volatile
    as $$ select attacker.hit('quote_ident'); select pg_catalog.quote_ident($1) $$;
create function attacker.lower(text) returns text language sql volatile
    as $$ select attacker.hit('lower'); select pg_catalog.lower($1) $$;

create function attacker.jsonb_agg_step(jsonb, anyelement) returns jsonb language sql volatile
    as $$ select attacker.hit('jsonb_agg');
          select $1 operator(pg_catalog.||) pg_catalog.jsonb_build_array($2) $$;
create aggregate attacker.jsonb_agg(anyelement) (
    sfunc = attacker.jsonb_agg_step, stype = jsonb, initcond = '[]'
);

create function attacker.text_eq(text, text) returns boolean language sql volatile
    as $$ select attacker.hit('= text'); select pg_catalog.texteq($1, $2) $$;
create operator attacker.= (leftarg = text, rightarg = text, function = attacker.text_eq);
create function attacker.uuid_eq(uuid, uuid) returns boolean language sql volatile
    as $$ select attacker.hit('= uuid'); select pg_catalog.uuid_eq($1, $2) $$;
create operator attacker.= (leftarg = uuid, rightarg = uuid, function = attacker.uuid_eq);
create function attacker.jsonb_field(jsonb, text) returns text language sql volatile
    as $$ select attacker.hit('->>'); select pg_catalog.jsonb_object_field_text($1, $2) $$;
create operator attacker.->> (leftarg = jsonb, rightarg = text, function = attacker.jsonb_field);
create function attacker.jsonb_concat(jsonb, jsonb) returns jsonb language sql volatile
    as $$ select attacker.hit('|| jsonb'); select pg_catalog.jsonb_concat($1, $2) $$;
create operator attacker.|| (leftarg = jsonb, rightarg = jsonb, function = attacker.jsonb_concat);

create function attacker.write_seen() returns trigger language plpgsql as $$
begin
    perform attacker.hit('write to ' || tg_table_schema || '.' || tg_table_name);
    return null;
end;
$$;
grant execute on all functions in schema attacker to public;
"""

# Column definitions of a package table, to build a look-alike of it.
COLUMNS = """
select string_agg(format('%%I %%s', attname, format_type(atttypid, atttypmod)), ', '
        order by attnum)
from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped
"""


def shadow_tables(conn: psycopg.Connection[Any], owner: Session) -> None:
    """attacker.<t> and pg_temp.<t> look-alikes of every package table, each
    logging any write. The temp ones are created in the owner's own session."""
    tables = [
        r[0]
        for r in conn.execute(
            "select relname from pg_class where relnamespace = 'resilience'::regnamespace"
            " and relkind in ('r', 'p')"
        )
    ]
    for table in tables:
        columns_row = conn.execute(COLUMNS, (f"resilience.{table}",)).fetchone()
        assert columns_row is not None
        columns = sql.SQL(columns_row[0])
        for schema in ("attacker", "pg_temp"):
            target = sql.Identifier(schema, table)
            create = sql.SQL("create table {} ({})").format(target, columns)
            trigger = sql.SQL(
                "create trigger write_seen after insert or update or delete on {}"
                " for each statement execute function attacker.write_seen()"
            ).format(target)
            if schema == "attacker":
                conn.execute(create)
                conn.execute(trigger)
                conn.execute(sql.SQL("grant all on {} to public").format(target))
            else:
                owner.query(create)
                owner.query(trigger)


HIJACKED_PATH = "attacker, pg_catalog, public"


def test_a_search_path_hijack_never_runs_the_attackers_code(
    conn: psycopg.Connection[Any], session: Callable[..., Session]
) -> None:
    conn.execute(
        """
        create table public.notes (id bigint generated always as identity primary key,
            body text not null);
        grant select, insert, update, delete on public.notes to authenticated;
        select resilience.manage_table('public.notes');
        """
    )
    conn.execute(ATTACKER)
    user = session("user-a", search_path=HIJACKED_PATH)
    shadow_tables(conn, user)

    def calls() -> list[str]:
        return [r[0] for r in conn.execute("select what from attacker.calls")]

    # The look-alikes work: a plain query under this path runs them.
    user.query("select now(), format('%I', 'x')")
    assert set(calls()) == {"now()", "format(text, text)"}
    conn.execute("delete from attacker.calls")

    # The whole API, under the hijacked path.
    notes = "public.notes"
    tx_id = user.rpc("tx_begin", timeout_ms=30000, label="hijack")
    inserted = user.rpc(
        "tx_execute", tx_id=tx_id, table_name=notes, operation="insert", data={"body": "one"}
    )
    note_id = inserted["data"][0]["id"]
    user.rpc("tx_savepoint", tx_id=tx_id, name="sp")
    user.rpc(
        "tx_execute",
        tx_id=tx_id,
        table_name=notes,
        operation="update",
        data={"body": "two"},
        match={"id": note_id},
    )
    user.rpc("tx_rollback_to", tx_id=tx_id, name="sp")
    user.rpc(
        "tx_execute",
        tx_id=tx_id,
        table_name=notes,
        operation="upsert",
        data={"id": note_id, "body": "three"},
    )
    assert user.rpc("tx_status", tx_id=tx_id)["status"] == "active"
    assert str(tx_id) in str(user.rpc_set("tx_active"))
    assert user.rpc("tx_commit", tx_id=tx_id)["status"] == "committed"

    tx_id = user.rpc("tx_begin")
    user.rpc("tx_execute", tx_id=tx_id, table_name=notes, operation="delete", match={"id": note_id})
    # Header mode: a plain write with x-resilience-tx, captured by the triggers.
    header_user = session(
        "user-a", search_path=HIJACKED_PATH, headers={"x-resilience-tx": str(tx_id)}
    )
    header_user.query("insert into public.notes (body) values ('via header')")
    assert user.rpc("tx_rollback", tx_id=tx_id)["status"] == "rolled_back"

    batch = user.rpc(
        "tx_run",
        operations=[
            {"table": notes, "operation": "insert", "data": {"body": "batch"}},
            {
                "table": notes,
                "operation": "update",
                "data": {"body": "batch, edited"},
                "match": {"id": {"$ref": "0.id"}},
            },
        ],
    )
    assert batch["success"] is True
    user.rpc("tx_reap", max_count=10)

    assert calls() == []
    bodies = [r[0] for r in conn.execute("select body from public.notes order by id")]
    assert bodies == ["three", "batch, edited"]
