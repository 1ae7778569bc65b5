"""A hostile app schema with logical transactions in flight, and the oracle
its rollbacks are checked against: every user table's rows as `row::text`,
taken before the writes they must bring back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

# Names a generated function might use for itself (old, new, row, tx_id,
# key, image), a reserved word, quotes, unicode, and most column types.
SCHEMA = r'''
create type "Mood" as enum ('sad', 'ok', 'über');
create domain posint as integer check (value > 0);
create type pair as (a integer, b text);
create schema "Odd ""Schema""";
create table "Odd ""Schema""".select (
    tx_id bigint primary key,
    old text,
    new jsonb,
    "row" integer[],
    "naïve ✓" numeric(12, 3),
    key bytea,
    image timestamptz,
    m "Mood",
    d posint,
    p pair,
    u uuid,
    r int4range,
    f double precision,
    g bigint generated always as (tx_id * 2) stored
);
create table public.orders (
    region text,
    id integer,
    "Note" text not null default '',
    touched integer not null default 0,
    primary key (region, id)
);
create function public.orders_touch() returns trigger language plpgsql
set search_path = public as $$
begin
    -- The docs' way for a trigger to leave restores alone.
    if current_setting('resilience.restoring', true) <> '' then return new; end if;
    new.touched := old.touched + 1;
    return new;
end $$;
create trigger orders_touch before update on public.orders
    for each row execute function public.orders_touch();
create table public.events (id integer, at date, payload jsonb, primary key (id, at))
    partition by range (at);
create table public.events_2026 partition of public.events
    for values from ('2026-01-01') to ('2027-01-01');
create table public.events_other partition of public.events default;
insert into "Odd ""Schema""".select
    (tx_id, old, new, "row", "naïve ✓", key, image, m, d, p, u, r, f)
values
    (1, 'it''s', '{"a": [1, null]}', '{1,NULL,3}', 1.5, '\x00ff', '2026-01-01 00:00+00',
     'über', 7, '(1,"x y")', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)', 'NaN'),
    (2, null, null, '{}', null, null, null, null, null, null, null, null, '-0'),
    (3, E'tab\there', '"s"', null, -0.001, '\x', 'infinity', 'sad', 1, '(,)', null, 'empty',
     '-Infinity');
insert into public.orders (region, id, "Note") values
    ('eu', 1, 'first'), ('eu', 2, 'second'), ('us', 1, 'ünïcode ✓'), ('us', 2, '');
insert into public.events values
    (1, '2026-03-01', '{"k": 1}'), (2, '2020-01-01', null), (3, '2026-12-31', '[]');
'''

TABLES = ['"Odd ""Schema""".select', "public.orders", "public.events"]


def manage_all(conn: psycopg.Connection[Any], tables: list[str] = TABLES) -> None:
    for table in tables:
        conn.execute("select resilience.manage_table(%s::regclass)", (table,))


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every user table's rows (partitions included), as text, sorted."""
    tables = [
        r[0]
        for r in conn.execute(
            "select c.oid::regclass::text from pg_class c join pg_namespace n"
            " on n.oid = c.relnamespace where c.relkind = 'r'"
            " and n.nspname not in ('resilience', 'information_schema')"
            " and n.nspname !~ '^pg_' order by 1"
        )
    ]
    out = {}
    for table in tables:
        rows = conn.execute(
            f"select t::text from only {table} t order by 1"  # noqa: S608 (catalog names)
        ).fetchall()
        out[table] = [r[0] for r in rows]
    return out


def execute(
    conn: psycopg.Connection[Any],
    tx: str,
    table: str,
    op: str,
    data: Any = None,
    match: Any = None,
) -> Any:
    row = conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (
            tx,
            table,
            op,
            None if data is None else json.dumps(data),
            None if match is None else json.dumps(match),
        ),
    ).fetchone()
    assert row is not None
    return row[0]


def call(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


@dataclass
class InFlight:
    """Transactions left open across an upgrade (or a dump and restore)."""

    rolled: str  # wrote before and after savepoint 'mid'; to be rolled back
    committed: str  # wrote rows of its own; to be committed
    locker: str  # only a lock (a claim, no change)
    before: dict[str, list[str]]  # after `committed`'s writes, before `rolled`'s
    at_savepoint: dict[str, list[str]]  # when `rolled` took savepoint 'mid'
    after: dict[str, list[str]]  # everything written


def put_in_flight(conn: psycopg.Connection[Any], v1: bool = False) -> InFlight:
    """Open transactions with images, a savepoint and claims, over every table
    (with `v1`, 0.1.0's API: no partitioned public.events, no lock)."""
    committed = call(conn, "select resilience.tx_begin(600000, 'kept')")
    execute(conn, committed, "public.orders", "insert", {"region": "jp", "id": 9, "Note": "new"})
    if not v1:
        execute(conn, committed, "public.events", "update", {"payload": {"c": 1}}, {"id": 2})
    locker = call(conn, "select resilience.tx_begin(600000, 'locker')")
    lock, data = ("update", {"Note": "locked"}) if v1 else ("lock", None)
    execute(conn, locker, "public.orders", lock, data, {"region": "us", "id": 2})
    before = snapshot(conn)

    rolled = call(conn, "select resilience.tx_begin(600000, 'undone')")
    odd = '"Odd ""Schema""".select'
    execute(conn, rolled, odd, "update", {"old": "changed", "f": 1e308, "m": "ok"}, {"tx_id": 1})
    execute(conn, rolled, odd, "delete", None, {"tx_id": 3})
    execute(conn, rolled, "public.orders", "update", {"Note": "x"}, {"region": "eu", "id": 1})
    if not v1:
        execute(conn, rolled, "public.events", "delete", None, {"id": 1})
    call(conn, "select resilience.tx_savepoint(%s, 'mid')", rolled)
    at_savepoint = snapshot(conn)
    execute(
        conn,
        rolled,
        odd,
        "insert",
        {"tx_id": 4, "old": "ins", "p": "(2,z)", "r": "[2,3)", "key": "\\x01", "d": 3},
    )
    execute(conn, rolled, odd, "update", {"new": {"deep": {"x": [1]}}}, {"tx_id": 1})
    execute(conn, rolled, odd, "update", {"tx_id": 20}, {"tx_id": 2})
    execute(conn, rolled, "public.orders", "delete", None, {"region": "eu", "id": 2})
    execute(conn, rolled, "public.orders", "update", {"region": "zz"}, {"region": "us", "id": 1})
    if not v1:
        # A row moved from the 2026 partition into the default one.
        execute(conn, rolled, "public.events", "update", {"at": "1990-05-05"}, {"id": 3})
        execute(conn, rolled, "public.events", "insert", {"id": 7, "at": "1999-01-01"})
    after = snapshot(conn)
    assert after != at_savepoint != before
    return InFlight(rolled, committed, locker, before, at_savepoint, after)


def finish_and_check(conn: psycopg.Connection[Any], state: InFlight) -> None:
    """Savepoint, rollback, commit and claims behave on `state` as before the
    upgrade: each step's rows equal the oracle's."""
    assert snapshot(conn) == state.after
    # The locker's and the rolled-back transaction's claims still hold.
    intruder = call(conn, "select resilience.tx_begin(600000, 'intruder')")
    for table, data, match in [
        ("public.orders", {"Note": "!"}, {"region": "us", "id": 2}),
        ("public.orders", {"Note": "!"}, {"region": "eu", "id": 1}),
        ('"Odd ""Schema""".select', {"old": "!"}, {"tx_id": 4}),
    ]:
        try:
            execute(conn, intruder, table, "update", data, match)
        except psycopg.errors.LockNotAvailable:
            pass
        else:
            raise AssertionError(f"{table} {match}: a claimed row was written by another tx")
    call(conn, "select resilience.tx_rollback_to(%s, 'mid')", state.rolled)
    assert snapshot(conn) == state.at_savepoint
    result = call(conn, "select resilience.tx_rollback(%s)", state.rolled)
    assert result["status"] == "rolled_back", result
    assert snapshot(conn) == state.before
    assert call(conn, "select resilience.tx_commit(%s)", state.committed)["status"] == "committed"
    assert call(conn, "select resilience.tx_commit(%s)", state.locker)["status"] == "committed"
    assert snapshot(conn) == state.before
    # Every claim is gone: the intruder now writes what was claimed.
    execute(conn, intruder, "public.orders", "update", {"Note": "!"}, {"region": "us", "id": 2})
    call(conn, "select resilience.tx_rollback(%s)", intruder)
    assert snapshot(conn) == state.before
