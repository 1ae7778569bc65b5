"""Header mode (PostgREST's x-resilience-tx) mixed with tx_execute, savepoints
and rollback_to, against a real-transaction oracle: the same statements run
on a twin table (schema `twin`, no package) inside ONE real database
transaction with real savepoints. After every tx_rollback_to, and after the
final tx_rollback / tx_commit, the managed table equals the twin (row::text
of the whole table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server, ServerFeatures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create table items (
    id integer primary key,
    v text,
    n integer not null default 0 check (n < 50),
    "key" text unique,
    u integer unique deferrable initially deferred
);
grant select, insert, update, delete on items to authenticated;
select resilience.manage_table('items');
create schema twin;
create table twin.items (
    id integer primary key,
    v text,
    n integer not null default 0 check (n < 50),
    "key" text unique,
    u integer unique deferrable initially deferred
);
"""
SEED = (
    "insert into items (id, v, n, key, u)"
    " select i, 'v' || i, i, 'k' || i, i from generate_series(1, 6) as i"
)

ids = st.integers(min_value=1, max_value=9)
texts = st.sampled_from(["a", "B", "", "ü'\"", "k1", "k3", None])
names = st.sampled_from(["a", "b", "c"])

# (statement, params strategy): run in header mode on public.items and
# verbatim on twin.items. Errors (unique, check) must happen on both.
PLAIN = [
    # A swap the deferred unique constraint allows only at commit.
    (
        "update items set u = case id when %s then (select u from items where id = %s)"
        " else (select u from items where id = %s) end where id in (%s, %s)",
        ids.flatmap(lambda a: ids.map(lambda b: (a, b, a, a, b))),
    ),
    ("update items set u = %s where id = %s", st.tuples(st.integers(1, 8), ids)),
    ("insert into items (id, v, n) values (%s, %s, %s)", st.tuples(ids, texts, st.integers(0, 60))),
    ("update items set v = %s, n = n + 1 where id = %s", st.tuples(texts, ids)),
    ("update items set key = %s where id = %s", st.tuples(texts, ids)),
    ("update items set id = id + 10 where id = %s", st.tuples(ids)),
    ("update items set id = id - 10 where id = %s", st.tuples(st.integers(11, 19))),
    ("update items set n = n + 1 where n < %s", st.tuples(st.integers(0, 8))),
    ("delete from items where id = %s", st.tuples(ids)),
    ("delete from items where n >= %s", st.tuples(st.integers(5, 12))),
    (
        "insert into items (id, v, n) values (%s, %s, 1)"
        " on conflict (id) do update set v = excluded.v, n = items.n + 1",
        st.tuples(ids, texts),
    ),
    ("insert into items (id, v) values (%s, %s) on conflict do nothing", st.tuples(ids, texts)),
    (
        "with d as (delete from items where id = %s returning *)"
        " insert into items (id, v, n) select id + 20, v, n from d",
        st.tuples(ids),
    ),
    (
        "with u as (update items set n = n + 2 where id = %s returning id)"
        " update items set v = 'cte' where id = %s",
        st.tuples(ids, ids),
    ),
]
MERGE = (
    "merge into items as t using (values (%s, %s)) as s (id, v) on t.id = s.id"
    " when matched and t.n > 3 then delete"
    " when matched then update set v = s.v"
    " when not matched then insert (id, v) values (s.id, s.v)",
    st.tuples(ids, texts),
)


def _execute_op() -> st.SearchStrategy[tuple[Any, ...]]:
    """tx_execute calls, each with the plain SQL a real transaction runs."""
    insert = st.builds(
        lambda i, v: (
            "exec",
            "insert",
            {"id": i, "v": v},
            None,
            "insert into items (id, v) values (%s, %s)",
            (i, v),
        ),
        ids,
        texts,
    )
    update = st.builds(
        lambda i, v: (
            "exec",
            "update",
            {"v": v},
            {"id": i},
            "update items set v = %s where id = %s",
            (v, i),
        ),
        ids,
        texts,
    )
    delete = st.builds(
        lambda i: ("exec", "delete", None, {"id": i}, "delete from items where id = %s", (i,)),
        ids,
    )
    upsert = st.builds(
        lambda i, v, n: (
            "exec",
            "upsert",
            {"id": i, "v": v, "n": n},
            None,
            "insert into items (id, v, n) values (%s, %s, %s)"
            " on conflict (id) do update set v = excluded.v, n = excluded.n",
            (i, v, n),
        ),
        ids,
        texts,
        st.integers(0, 60),
    )
    return st.one_of(insert, update, delete, upsert)


def _ops(merge: bool) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    plain = PLAIN + ([MERGE] if merge else [])
    plain_op = st.one_of(*[st.tuples(st.just("sql"), st.just(s), p) for s, p in plain])
    step = st.one_of(
        plain_op,
        _execute_op(),
        st.tuples(st.just("savepoint"), names),
        st.tuples(st.just("rollback_to"), names),
    )
    return st.lists(step, min_size=1, max_size=14)


@pytest.fixture
def setup(
    server: Server, database: str, dsn: str, server_features: ServerFeatures
) -> Iterator[tuple[Rest, psycopg.Connection[Any], psycopg.Connection[Any], bool]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        with psycopg.connect(dsn, autocommit=False) as twin:
            twin.execute("set search_path = twin")
            twin.commit()
            user = Rest(server, database, sub="user-1")
            try:
                yield user, admin, twin, server_features.major >= 15
            finally:
                user.close()


def _failed(run: Any, *args: Any, **kwargs: Any) -> str | None:
    try:
        run(*args, **kwargs)
    except psycopg.Error as error:
        return error.sqlstate or "?"
    return None


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), commit=st.booleans())
def test_header_mode_matches_a_real_transaction(
    setup: tuple[Rest, psycopg.Connection[Any], psycopg.Connection[Any], bool],
    data: st.DataObject,
    commit: bool,
) -> None:
    user, admin, twin, merge = setup
    admin.execute("delete from items")
    admin.execute(SEED)
    twin.execute("delete from items")
    twin.execute(SEED)
    twin.commit()
    before = table_text(admin, "public.items")
    assert table_text(twin, "twin.items") == before
    ops = data.draw(_ops(merge))

    tx = str(user.rpc("tx_begin", 60000))
    twin.execute("set constraints all immediate")  # as each request commits
    try:
        stack: list[str] = []
        for op in ops:
            kind = op[0]
            if kind == "savepoint":
                name = op[1]
                user.rpc("tx_savepoint", tx, name)
                twin.execute(f'savepoint "{name}"')
                if name in stack:
                    stack.remove(name)
                stack.append(name)
                continue
            if kind == "rollback_to":
                name = op[1]
                if name not in stack:
                    with pytest.raises(psycopg.Error) as raised:
                        user.rpc("tx_rollback_to", tx, name)
                    assert raised.value.sqlstate == "RZ006"
                    continue
                user.rpc("tx_rollback_to", tx, name)
                twin.execute(f'rollback to savepoint "{name}"')
                del stack[stack.index(name) + 1 :]
                assert table_text(admin, "public.items") == table_text(twin, "twin.items"), ops
                continue
            if kind == "sql":
                statement, params = op[1], op[2]
                logical: tuple[Any, ...] = (user.request, statement, params)
                logical_kw: dict[str, Any] = {"tx": tx}
            else:
                _, operation, row, match, statement, params = op
                logical = (
                    user.rpc,
                    "tx_execute",
                    tx,
                    "items",
                    operation,
                    None if row is None else json.dumps(row),
                    None if match is None else json.dumps(match),
                )
                logical_kw = {}

            twin.execute("savepoint __stmt")
            expected = _failed(twin.execute, statement, params)
            if expected is None:
                twin.execute("release savepoint __stmt")
            else:
                twin.execute("rollback to savepoint __stmt")
            got = _failed(*logical, **logical_kw)
            assert got == expected, (op, ops)

        if commit:
            assert user.rpc("tx_commit", tx)["success"] is True
            twin.commit()
        else:
            result = user.rpc("tx_rollback", tx)
            assert result["success"] is True, result
            twin.rollback()
        assert table_text(admin, "public.items") == table_text(twin, "twin.items"), ops
        # No claim is left behind: a plain write on every row goes through.
        user.request("update items set n = n where true")
    finally:
        # A failed example leaves nothing behind for the next one.
        twin.rollback()
        admin.execute(
            "select resilience.tx_rollback(id, 'cleanup', true) from resilience.transactions"
            " where status = 'active'"
        )
