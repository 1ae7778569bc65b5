"""Triggers, RLS, grants, partitions, wide tables, DDL between calls:
fast path == general path (twin tables), and tx_rollback restores."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .conftest import compare, make_twins, strip, table_text


def test_before_trigger_modifies_or_skips(conn: psycopg.Connection[Any]) -> None:
    make_twins(
        conn,
        """
        create table {t} (id int primary key, a text, b int default 1);
        create function {t}_bt() returns trigger language plpgsql as $$
        begin
            if new.a = 'skip' then return null; end if;
            if new.a = 'boom' then
                raise exception using errcode = 'P0042', message = 'boom';
            end if;
            new.b := coalesce(new.b, 0) + 100;
            new.a := current_setting('plan_cache_mode') || '/' || current_setting('search_path');
            return new;
        end $$;
        create trigger bt before insert on {t} for each row execute function {t}_bt();
        """,
    )
    rows = [
        {"id": 1, "a": "x", "b": 2},
        {"id": 2, "a": "skip"},
        {"id": 3, "a": "boom", "b": 1},
        {"id": 4, "a": "y"},
        {"id": 5, "a": "skip", "b": 3},
    ]
    seen = compare(conn, rows)
    assert seen["results"][1]["count"] == 0


def test_rls_with_check_column_grants_postgrest(conn: psycopg.Connection[Any]) -> None:
    make_twins(
        conn,
        """
        create table {t} (
            id int generated always as identity primary key,
            owner text not null
                default (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
            body text, secret text default 's'
        );
        alter table {t} enable row level security;
        create policy ins on {t} for insert to authenticated
            with check (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
        create policy sel on {t} for select to authenticated using (true);
        grant usage on schema public to authenticated;
        """,
    )
    out: dict[str, list[Any]] = {}
    for table in ("fast", "slow"):
        conn.execute(f"grant select, insert on {table} to authenticated")
        results = []
        for sub, data in [
            ("u1", {"body": "b"}),
            ("u2", {"body": "b", "owner": "u2", "secret": "x"}),
            ("u2", {"body": "b", "owner": "u1", "secret": "x"}),
            ("u3", {"body": "b", "owner": "u3"}),
            ("u1", {"body": "c"}),
        ]:
            with conn.transaction():
                conn.execute("set local role authenticated")
                conn.execute(
                    "select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": sub, "role": "authenticated"}),),
                )
                tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
            with conn.transaction():
                conn.execute("set local role authenticated")
                conn.execute(
                    "select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": sub, "role": "authenticated"}),),
                )
                try:
                    with conn.transaction():
                        r = conn.execute(
                            "select resilience.tx_execute(%s, %s, 'insert', %s)",
                            (tx, table, Jsonb(data)),
                        ).fetchone()[0]  # type: ignore[index]
                except psycopg.Error as error:
                    r = ("error", error.sqlstate)
                results.append(r)
        # column grants only: revoke table insert, grant some columns
        conn.execute(
            f"revoke insert on {table} from authenticated;"
            f" grant insert (body) on {table} to authenticated"
        )
        for data in [{"body": "z"}, {"body": "z", "owner": "u1", "secret": "q"}]:
            with conn.transaction():
                conn.execute("set local role authenticated")
                conn.execute("select set_config('request.jwt.claims', '{\"sub\": \"u1\"}', true)")
                tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
                try:
                    with conn.transaction():
                        r = conn.execute(
                            "select resilience.tx_execute(%s, %s, 'insert', %s)",
                            (tx, table, Jsonb(data)),
                        ).fetchone()[0]  # type: ignore[index]
                except psycopg.Error as error:
                    r = ("error", error.sqlstate)
                results.append(r)
        out[table] = [results, table_text(conn, table)]
    assert out["fast"] == out["slow"]
    assert out["fast"][0][2] == ("error", "42501")


def test_partitioned_wide_all_default_identity_only(conn: psycopg.Connection[Any]) -> None:
    make_twins(
        conn,
        """
        create table {t} (k int, id int default 0, v text, primary key (k, id))
            partition by list (k);
        create table {t}_1 partition of {t} for values in (1);
        create table {t}_2 partition of {t} (v default 'p2') for values in (2);
        """,
    )
    compare(
        conn,
        [
            {"k": 1, "id": 1, "v": "a"},
            {"k": 2, "id": 1},
            {"k": 3, "id": 1, "v": "x"},
            {"k": 2, "v": None},
        ],
    )
    conn.execute("drop table fast, slow")
    cols = ", ".join(f'"c{i}" int default {i}' for i in range(130))
    make_twins(conn, "create table {t} (id int primary key, " + cols + ")")
    full = {f"c{i}": i * 2 for i in range(130)}
    compare(conn, [{"id": 1, **full}, {"id": 2}, {"id": 3, "c5": 1}, {"id": 4, **full, "c7": "x"}])
    conn.execute("drop table fast, slow")
    make_twins(
        conn, "create table {t} (id int generated always as identity primary key, a int default 1)"
    )
    compare(conn, [{}, {"a": 2}, {"id": 3}, {"id": 4, "a": 1}, []])
    conn.execute("drop table fast, slow")
    make_twins(
        conn, "create table {t} (id int generated always as identity primary key)", fast=False
    )
    compare(conn, [{}, {"id": 1}, [{}]])


def test_ddl_between_calls_same_session(conn: psycopg.Connection[Any]) -> None:
    make_twins(conn, "create table {t} (id int primary key, a text, b int default 5)")
    compare(conn, [{"id": 1, "a": "x", "b": 1}, {"id": 2, "a": "y"}])
    for ddl in [
        "alter table {t} add column c int default 9",
        "alter table {t} alter column b drop default",
        "alter table {t} alter column a type int using length(a)",
        "alter table {t} rename column a to aa",
        "alter table {t} drop column c",
        "alter table {t} alter column b set not null",
        "alter table {t} add column g int generated always as (b * 2) stored",
        "alter table {t} drop constraint {t}_pkey, add primary key (id, b)",
    ]:
        for table in ("fast", "slow"):
            conn.execute(ddl.replace("{t}", table))
        strip(conn)
        compare(
            conn,
            [
                {"id": 10, "a": "x", "b": 1},
                {"id": 11, "a": 3},
                {"id": 12, "aa": 4, "b": 2},
                {"id": 13, "aa": 4, "b": 2, "c": 1},
                {"id": 14, "aa": 4, "g": 1, "b": 2},
                {"id": 15, "aa": 4},
            ],
        )
    for table in ("fast", "slow"):
        conn.execute(f"alter table {table} rename to {table}2")
    conn.execute(
        "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
        " where relation = 'slow2'::regclass"
    )
    a = [conn.execute("select resilience.tx_begin()").fetchone()[0] for _ in range(2)]  # type: ignore[index]
    r = [
        conn.execute(
            "select resilience.tx_execute(%s, %s, 'insert', %s)",
            (tx, t, Jsonb({"id": 20, "aa": 1, "b": 1})),
        ).fetchone()[0]  # type: ignore[index]
        for tx, t in zip(a, ("fast2", "slow2"), strict=True)
    ]
    assert r[0] == r[1]


def test_other_ddl_between_calls_same_session(conn: psycopg.Connection[Any]) -> None:
    """DDL that is not on the table's columns (domains, functions in
    defaults, policies, triggers, grants) between calls of one session."""
    conn.execute("""
        create domain dpos as int;
        create function public.dflt() returns int language sql as $$ select 1 $$;
    """)
    make_twins(
        conn, "create table {t} (id int primary key, a dpos, b int default public.dflt(), c text)"
    )
    n = iter(range(100, 10000))

    def rows() -> list[Any]:
        return [{"id": next(n), "a": 1, "b": 2, "c": "x"}, {"id": next(n), "a": -1, "c": "y"}] * 3

    compare(conn, rows())
    for ddl in [
        "alter domain dpos add constraint pos check (value > 0)",
        "create or replace function public.dflt() returns int language sql as $$ select 2 $$",
        "alter table {t} alter column b set default 42",
        "create function {t}_t() returns trigger language plpgsql"
        " as $$ begin new.c := 'T'; return new; end $$;"
        " create trigger t before insert on {t} for each row execute function {t}_t()",
        "alter table {t} add constraint ck check (c <> 'T')",
        "alter table {t} drop constraint ck; drop trigger t on {t}",
        "alter table {t} enable row level security; alter table {t} force row level security;"
        " create policy p on {t} with check (b <> 42)",
    ]:
        for table in ("fast", "slow") if "{t}" in ddl else ("",):
            conn.execute(ddl.replace("{t}", table))
        strip(conn)
        compare(conn, rows())
