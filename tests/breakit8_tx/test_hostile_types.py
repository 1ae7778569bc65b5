"""Every column type the oracle may not have covered, with column names equal
to words generated SQL may use, written through PostgREST's header mode and
tx_execute, then rolled back: the table equals, row::text for row::text, a
copy taken before the transaction (a real ROLLBACK's result)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from breakit8_tx.rest import Rest, table_text

# Column names: words of the generated SQL and of its aliases and variables.
SCHEMA = """
create type mood as enum ('sad', 'ok', 'happy');
create type "pair" as (x integer, "y z" text);
create domain intarr as integer[] check (cardinality(value) < 10);
create domain nn_text as text not null;
create table hostile (
    "key" integer primary key,
    dropped_a text,
    n double precision,
    tx numeric,
    seq bigint generated always as identity,
    op mood,
    dropped_b integer,
    "old" intarr,
    "new" "pair",
    "row" int4range,
    data int4multirange,
    "match" xml,
    image money,
    "before" bit varying(12),
    "after" tsvector,
    relation timestamptz,
    claim interval,
    b json,
    a jsonb,
    k1 bytea,
    tx_id uuid,
    v_tx point,
    "select" nn_text default 'd',
    "Mixed ""Q"" ü" text[],
    new_rows real,
    gen text generated always as (coalesce("select", '') || '!') stored
);
alter table hostile drop column dropped_a, drop column dropped_b;
grant select, insert, update, delete on hostile to authenticated;
grant usage on all sequences in schema public to authenticated;
select resilience.manage_table('hostile');
"""
SEED = """
insert into hostile ("key", n, tx, op, "old", "new", "row", data, "match", image, "before",
    "after", relation, claim, b, a, k1, tx_id, v_tx, "select", "Mixed ""Q"" ü", new_rows) values
(1, 'NaN', 'NaN', 'sad', '{1,2}', '(1,"a b")', '[1,5)', '{[1,2),[4,8)}', '<a>x</a>',
    '12.34', B'101', 'a fat cat', 'infinity', '1 year 2 mons -3 days', '{"a":1,"a":2}',
    '{"k": null}', '\\x00ff', '00000000-0000-0000-0000-000000000001', '(1,2)', 'x',
    '{NULL,"",a}', '-0'),
(2, '-0', '1.10', 'ok', '{}', '(,)', 'empty', '{}', '<b/>', '-1.00', B'', '', '-infinity',
    '-1 day', 'null', 'null', '', null, '(0,0)', '', '{}', 'NaN'),
(3, 'Infinity', '-0.000', 'happy', null, null, null, null, null, null, null, null,
    '2000-01-01 00:00:00.000001+14', '0', '[]', '[]', null, null, null, 'ü''"\\', null,
    '-Infinity'),
(4, '-Infinity', '1e-30', null, '{3}', '(-1,"")', '(,)', '{(,)}', '<?xml version="1.0"?><c/>',
    '0', B'111111111111', 'z:1A', null, null, ' { } ', '{}', '\\x', null, '(NaN,1)', 'y',
    '{"\\"",","}', '1.5e-30')
"""
WRITABLE = [
    "n", "tx", "op", "old", "new", "row", "data", "match", "image", "before", "after",
    "relation", "claim", "b", "a", "k1", "tx_id", "v_tx", "select", 'Mixed "Q" ü', "new_rows",
]  # fmt: skip
keys = st.integers(1, 4)


def _copy_column(column: str) -> sql.Composed:
    return sql.SQL("update hostile set {c} = (select s.{c} from hostile as s where s.key = %s)"
                   " where key = %s").format(c=sql.Identifier(column))  # fmt: skip


INSERT_COPY = sql.SQL(
    "insert into hostile ({cols}) overriding system value"
    " select key + 100, seq + 100, {cols2} from hostile where key = %s"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in ["key", "seq", *WRITABLE]),
    cols2=sql.SQL(", ").join(sql.Identifier(c) for c in WRITABLE),
)
# tx_execute fed the row as supabase-js would read it (to_jsonb), minus the
# columns a client cannot write.
EXECUTE_COPY = (
    "select resilience.tx_execute(%s, 'hostile', 'update',"
    " (select to_jsonb(s) - 'key' - 'seq' - 'gen' from hostile as s where s.key = %s),"
    " jsonb_build_object('key', %s))"
)
EXECUTE_INSERT = (
    "select resilience.tx_execute(%s, 'hostile', 'insert',"
    " (select jsonb_set(to_jsonb(s) - 'seq' - 'gen', '{key}', to_jsonb(s.key + 200))"
    " from hostile as s where s.key = %s))"
)

steps = st.one_of(
    st.tuples(st.just("copy"), st.sampled_from(WRITABLE), keys, keys),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("rekey"), keys),
    st.tuples(st.just("insert"), keys),
    st.tuples(st.just("execute_copy"), keys, keys),
    st.tuples(st.just("execute_insert"), keys),
    st.tuples(st.just("rename_enum"), st.just(0)),
)


@pytest.fixture
def hostile(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        user = Rest(server, database, sub="hostile-user")
        try:
            yield user, admin
        finally:
            user.close()


def test_seeded_values_round_trip_a_header_mode_rollback(hostile: tuple[Rest, Any]) -> None:
    user, admin = hostile
    admin.execute(SEED)
    before = table_text(admin, "hostile")
    tx = str(user.rpc("tx_begin", 60000))
    user.request(INSERT_COPY, (1,), tx=tx)
    for column in WRITABLE:
        user.request(_copy_column(column), (3, 1), tx=tx)
        user.request(_copy_column(column), (1, 2), tx=tx)
    user.request("update hostile set key = key + 10 where key = 4", tx=tx)
    user.request("delete from hostile where key = 2", tx=tx)
    assert table_text(admin, "hostile") != before
    result = user.rpc("tx_rollback", tx)
    assert result["success"] is True, result
    assert table_text(admin, "hostile") == before


def test_to_jsonb_of_every_seeded_row_is_accepted_by_tx_execute(hostile: tuple[Rest, Any]) -> None:
    """What a client reads (to_jsonb) it can write back through tx_execute."""
    user, admin = hostile
    admin.execute(SEED)
    before = table_text(admin, "hostile")
    tx = str(user.rpc("tx_begin", 60000))
    for key in (1, 2, 3, 4):
        user.request(EXECUTE_COPY, (tx, key, key))
        user.request(EXECUTE_INSERT, (tx, key))
    assert user.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "hostile") == before


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(steps, min_size=1, max_size=10))
def test_any_sequence_rolls_back_to_the_copy(
    hostile: tuple[Rest, Any], ops: list[tuple[Any, ...]]
) -> None:
    user, admin = hostile
    admin.execute("delete from hostile")
    if admin.execute("select 1 from pg_enum where enumlabel = 'glum'").fetchone():
        admin.execute("alter type mood rename value 'glum' to 'sad'")
    admin.execute(SEED)
    admin.execute("drop table if exists snapshot")
    admin.execute("create table snapshot as select * from hostile")
    tx = str(user.rpc("tx_begin", 60000))
    try:
        _run(user, admin, tx, ops)
        result = user.rpc("tx_rollback", tx)
    finally:
        admin.execute(
            "select resilience.tx_rollback(id, 'cleanup', true) from resilience.transactions"
            " where status = 'active'"
        )
    assert result["success"] is True, (result, ops)
    assert table_text(admin, "hostile") == table_text(admin, "snapshot"), ops
    assert json.dumps(result)  # the result is plain JSON


def _run(user: Rest, admin: Any, tx: str, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        kind = op[0]
        source = op[1]
        if kind.startswith("execute") and not user.request(
            "select 1 from hostile where key = %s", (source,)
        ):
            continue  # no row to read the values from
        try:
            if kind == "copy":
                user.request(_copy_column(op[1]), (op[2], op[3]), tx=tx)
            elif kind == "delete":
                user.request("delete from hostile where key = %s", (op[1],), tx=tx)
            elif kind == "rekey":
                user.request("update hostile set key = key + 10 where key = %s", (op[1],), tx=tx)
            elif kind == "insert":
                user.request(INSERT_COPY, (op[1],), tx=tx)
            elif kind == "execute_copy":
                user.request(EXECUTE_COPY, (tx, op[1], op[2]))
            elif kind == "execute_insert":
                user.request(EXECUTE_INSERT, (tx, op[1]))
            elif kind == "rename_enum":
                # DDL mid-transaction: the enum's label changes under images.
                if not admin.execute("select 1 from pg_enum where enumlabel = 'glum'").fetchone():
                    admin.execute("alter type mood rename value 'sad' to 'glum'")
        except psycopg.errors.UniqueViolation:
            pass  # a copy of a row already copied, or a key already moved
