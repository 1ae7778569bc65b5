"""An undo that cannot apply fails whole: when a write outside the
transaction makes one restore impossible (a unique key, a foreign key, an
exclusion or a check refuses it), tx_rollback fails with RZ005 naming the
constraint and its SQLSTATE, every row of every table stays as it was
before the attempt (the newer steps already undone come back too), the
transaction stays active with its claims, and once the obstacle is gone the
same rollback succeeds and leaves what a real ROLLBACK would have."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

SCHEMA = """
create table acct (id int primary key, email text collate "C" unique, n int);
create table parent (id int primary key, note text);
create table child (id int primary key, pid int references parent, v jsonb);
create table booking (id int primary key, r int4range, exclude using gist (r with &&));
create table part (id int, region text, v numeric, primary key (id, region))
    partition by list (region);
create table part_a partition of part for values in ('a');
create table part_b partition of part for values in ('b');
insert into acct values (1, 'a@x', 7);
insert into parent values (1, 'p1'), (2, 'p2');
insert into child values (1, 1, '{"k": "\\u00e9"}');
insert into booking values (1, '[1,5)');
insert into part values (1, 'a', 'NaN'), (2, 'b', '-0.0');
"""
TABLES = ["acct", "parent", "child", "booking", "part"]

# (the first write of the transaction, the plain write that makes its undo
# impossible, the SQLSTATE and constraint of the refusal, the plain write
# that removes the obstacle again)
OBSTACLES = {
    "unique": (
        ("acct", "update", {"email": "b@x"}, {"id": 1}),
        "insert into acct values (9, 'a@x', 0)",
        "23505",
        "acct_email_key",
        "delete from acct where id = 9",
    ),
    "foreign key": (
        ("child", "delete", None, {"id": 1}),
        "delete from parent where id = 1",
        "23503",
        "child_pid_fkey",
        "insert into parent values (1, 'p1')",
    ),
    "exclusion": (
        ("booking", "update", {"r": "[10,15)"}, {"id": 1}),
        "insert into booking values (2, '[2,3)')",
        "23P01",
        "booking_r_excl",
        "delete from booking where id = 2",
    ),
    "check": (
        ("acct", "update", {"n": 2}, {"id": 1}),
        "alter table acct add constraint acct_n_small check (n < 5) not valid",
        "23514",
        "acct_n_small",
        "alter table acct drop constraint acct_n_small",
    ),
}


def state(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for table in TABLES
        for r in conn.execute(
            f"select tableoid::regclass::text || ' ' || t::text from {table} t order by 1"  # noqa: S608
        )
    ]


def execute(
    conn: psycopg.Connection[Any], tx: str, table: str, op: str, data: Any, match: Any
) -> None:
    conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (tx, table, op, json.dumps(data) if data else None, json.dumps(match) if match else None),
    )


@pytest.mark.parametrize("obstacle", sorted(OBSTACLES))
def test_an_undo_that_cannot_apply_fails_whole_and_can_be_retried(
    conn: psycopg.Connection[Any], obstacle: str
) -> None:
    first, block, sqlstate, constraint, unblock = OBSTACLES[obstacle]
    conn.execute(SCHEMA)
    for table in TABLES:
        conn.execute("select resilience.manage_table(%s::regclass)", (table,))
    original = state(conn)
    tx = str(conn.execute("select resilience.tx_begin()").fetchone()[0])  # type: ignore[index]
    execute(conn, tx, *first)
    # Newer steps on every table, undone before the one that fails.
    execute(conn, tx, "part", "update", {"region": "b", "v": "1.50"}, {"id": 1, "region": "a"})
    execute(conn, tx, "parent", "insert", {"id": 3, "note": "new"}, None)
    execute(conn, tx, "parent", "update", {"note": "changed"}, {"id": 2})
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        conn.execute("insert into acct values (2, 'c@x', 5)")
        conn.execute("update part set v = 'Infinity' where id = 2")
        conn.execute("insert into booking values (3, '[20,30)')")
    conn.execute(block)
    before_attempt = state(conn)

    with pytest.raises(psycopg.Error) as failure:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert failure.value.sqlstate == "RZ005"
    conflicts = json.loads(failure.value.diag.message_detail or "")["conflicts"]
    assert [(c["sqlstate"], c["constraint"]) for c in conflicts] == [(sqlstate, constraint)]
    assert state(conn) == before_attempt
    status = conn.execute("select resilience.tx_status(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert status["status"] == "active"
    with pytest.raises(psycopg.errors.LockNotAvailable):
        conn.execute("update parent set note = 'plain' where id = 2")

    conn.execute(unblock)
    result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert result["success"] is True
    assert state(conn) == original
