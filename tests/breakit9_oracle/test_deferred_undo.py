"""Deferred constraints hold at each commit, not after each statement: a
logical transaction's call may pass through states they forbid, and its
rollback must be able to walk back through them, as a real ROLLBACK does.
They are checked once, after the last undo step: a violation then is RZ005
naming the table and the constraint, nothing restored."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

SCHEMA = """
create table dpar (id int primary key, u int unique deferrable initially deferred);
create table dchild (id int primary key, pid int references dpar deferrable initially deferred);
insert into dpar values (1, 1), (2, 2), (3, 3);
insert into dchild values (1, 1);
select resilience.manage_table('dpar');
select resilience.manage_table('dchild');
"""


def rows(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select 'dpar' || p::text from dpar p"
            " union all select 'dchild' || c::text from dchild c order by 1"
        )
    ]


def begin(conn: psycopg.Connection[Any]) -> str:
    return str(conn.execute("select resilience.tx_begin()").fetchone()[0])  # type: ignore[index]


def in_one_call(conn: psycopg.Connection[Any], tx: str, *statements: str) -> None:
    """Plain statements joined to the logical transaction by the header, in
    one database transaction (one PostgREST request of a SQL function)."""
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        for statement in statements:
            conn.execute(statement)


def rollback(conn: psycopg.Connection[Any], tx: str) -> Any:
    return conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(SCHEMA)
    return conn


def test_rollback_walks_back_past_a_deferred_foreign_key_one_call_passed(
    db: psycopg.Connection[Any],
) -> None:
    before = rows(db)
    tx = begin(db)
    # pid 4 has no parent: allowed, because the same call moves on to 3.
    in_one_call(
        db,
        tx,
        "update dchild set pid = 4 where id = 1",
        "update dchild set id = 2, pid = 3 where id = 1",
    )
    assert rollback(db, tx)["success"] is True
    assert rows(db) == before


def test_rollback_undoes_a_deferred_unique_swap_made_in_one_tx_run(
    db: psycopg.Connection[Any],
) -> None:
    before = rows(db)
    tx = begin(db)
    ops = [
        {"table": "dpar", "operation": "update", "data": {"u": 2}, "match": {"id": 1}},
        {"table": "dpar", "operation": "update", "data": {"u": 1}, "match": {"id": 2}},
    ]
    with db.transaction():
        db.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        db.execute("select resilience.tx_run(%s::jsonb)", (json.dumps(ops),))
    assert db.execute("select u from dpar where id = 1").fetchone() == (2,)
    assert rollback(db, tx)["success"] is True
    assert rows(db) == before


def test_rollback_to_savepoint_walks_back_past_a_deferred_foreign_key(
    db: psycopg.Connection[Any],
) -> None:
    tx = begin(db)
    db.execute("select resilience.tx_execute(%s, 'dpar', 'insert', '{\"id\": 9, \"u\": 9}')", (tx,))
    db.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    at_savepoint = rows(db)
    in_one_call(
        db,
        tx,
        "update dchild set pid = 5 where id = 1",
        "update dchild set pid = 9 where id = 1",
    )
    db.execute("select resilience.tx_rollback_to(%s, 'sp')", (tx,))
    assert rows(db) == at_savepoint
    assert rollback(db, tx)["success"] is True


def test_a_deferred_violation_left_by_the_undo_is_rz005_naming_table_and_constraint(
    db: psycopg.Connection[Any],
) -> None:
    tx = begin(db)
    db.execute(
        "select resilience.tx_execute(%s, 'dpar', 'update', '{\"u\": 7}', '{\"id\": 1}')", (tx,)
    )
    db.execute("insert into dpar values (5, 1)")  # takes u = 1 meanwhile (an unclaimed row)
    before_attempt = rows(db)
    with pytest.raises(psycopg.Error) as failure:
        rollback(db, tx)
    assert failure.value.sqlstate == "RZ005"
    detail = json.loads(failure.value.diag.message_detail or "")
    assert detail["conflicts"] == [
        {
            "operation": "deferred check",
            "seq": None,
            "table": "public.dpar",
            "sqlstate": "23505",
            "constraint": "dpar_u_key",
            "error": 'duplicate key value violates unique constraint "dpar_u_key"',
        }
    ]
    assert "deferred check public.dpar" in str(failure.value)
    assert rows(db) == before_attempt
    db.execute("delete from dpar where id = 5")
    assert rollback(db, tx)["success"] is True


def test_the_reaper_walks_back_past_a_deferred_foreign_key_one_call_passed(
    db: psycopg.Connection[Any],
) -> None:
    before = rows(db)
    tx = str(db.execute("select resilience.tx_begin(2000)").fetchone()[0])  # type: ignore[index]
    in_one_call(
        db,
        tx,
        "update dchild set pid = 4 where id = 1",
        "update dchild set pid = 2 where id = 1",
    )
    while db.execute(
        "select expires_at > clock_timestamp() from resilience.transactions where id = %s", (tx,)
    ).fetchone() == (True,):
        time.sleep(0.1)
    db.execute("select resilience.tx_reap()")
    status = db.execute("select resilience.tx_status(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert status["status"] == "timed_out", status
    assert rows(db) == before


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limitation: two equal rows under one deferrable primary key in one call; "
    "the undo of the delete finds the other one and reads it as already restored",
)
def test_a_call_that_had_two_equal_rows_under_a_deferrable_key_is_rolled_back(
    conn: psycopg.Connection[Any],
) -> None:
    """The call below had two equal rows (1, 'x') between its statements (a
    deferrable primary key allows it); the rollback must leave exactly the
    one row there was."""
    conn.execute("""
        create table dk (id int primary key deferrable initially deferred, v text);
        insert into dk values (1, 'x');
        select resilience.manage_table('dk');
    """)
    tx = begin(conn)
    in_one_call(
        conn,
        tx,
        "insert into dk values (1, 'x')",
        "delete from dk where ctid = (select min(ctid) from dk where id = 1)",
    )
    assert rollback(conn, tx)["success"] is True
    assert [r[0] for r in conn.execute("select d::text from dk d")] == ["(1,x)"]
