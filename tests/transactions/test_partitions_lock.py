"""Partitioned tables and the `lock` operation (issue 10, items 7 and 8).

Partitions: manage_table on a partitioned table captures writes to every
partition, through the parent or straight into a partition; a key update
that moves a row to another partition round-trips; a partition or an
inheritance child is refused with a hint naming its parent; a claim cannot
be bypassed by writing through the parent or the partition.

Lock: tx_execute(tx, table, 'lock', match => ...) claims the matched rows
without writing them and returns them; other writers, logical or plain, get
55P03 at once; commit and rollback release; a read under lock followed by a
write across calls loses no update."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgresilience import TransactionManager
from pgresilience.errors import ClaimConflict

from .conftest import begin, call, execute

PARTITIONED = """
create table events (
    payload jsonb,
    region text not null,
    id integer not null,
    at timestamptz default '2026-01-01 00:00+00',
    primary key (region, id)
) partition by list (region);
create table events_eu partition of events for values in ('eu');
create table events_us partition of events for values in ('us');
create table events_rest partition of events default;
insert into events (payload, region, id) values
    ('{"n": 1}', 'eu', 1), ('{"n": 2}', 'eu', 2), ('null', 'us', 1), (null, 'ap', 1);
select resilience.manage_table('events');
"""


def rows(conn: psycopg.Connection[Any], table: str = "events") -> list[str]:
    """Every row as row::text with the partition it lives in."""
    statement = sql.SQL("select tableoid::regclass::text || ' ' || t::text from {} as t order by 1")
    return [r[0] for r in conn.execute(statement.format(sql.Identifier(table))).fetchall()]


def header_write(conn: psycopg.Connection[Any], tx: str, statement: str) -> None:
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)", (json.dumps({"x-resilience-tx": tx}),)
        )
        conn.execute(statement)


def raises(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> str | None:
    """The SQLSTATE the statement fails with (None when it succeeds)."""
    try:
        conn.execute(statement, params)
    except psycopg.Error as error:
        return error.sqlstate
    return None


# ---------------------------------------------------------------- partitions


def test_writes_to_every_partition_roll_back_exactly(conn):
    conn.execute(PARTITIONED)
    before = rows(conn)
    tx = begin(conn)
    execute(conn, tx, "events", "update", {"payload": {"n": 9}}, {"region": "eu", "id": 1})
    execute(conn, tx, "events", "insert", {"region": "zz", "id": 5, "payload": None})
    execute(conn, tx, "events", "delete", match={"region": "us", "id": 1})
    header_write(conn, tx, "update events set payload = '[]' where region = 'ap'")
    header_write(conn, tx, "delete from events_eu where id = 2")  # straight into a partition
    header_write(conn, tx, "insert into events_us (region, id) values ('us', 7)")
    assert rows(conn) != before
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_a_key_update_moving_a_row_between_partitions_round_trips(conn):
    conn.execute(PARTITIONED)
    before = rows(conn)
    tx = begin(conn)
    moved = execute(conn, tx, "events", "update", {"region": "us"}, {"region": "eu", "id": 2})
    assert moved["count"] == 1 and moved["data"][0]["region"] == "us"
    header_write(conn, tx, "update events set region = 'zz' where region = 'us' and id = 1")
    assert any(r.startswith("events_us ") and ",us,2," in r for r in rows(conn))
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before

    # And the same moves, committed, stay.
    tx = begin(conn)
    execute(conn, tx, "events", "update", {"region": "us"}, {"region": "eu", "id": 2})
    call(conn, "tx_commit", tx)
    assert any(r.startswith("events_us ") and ",us,2," in r for r in rows(conn))


def test_savepoint_over_partitions(conn):
    conn.execute(PARTITIONED)
    tx = begin(conn)
    execute(conn, tx, "events", "update", {"payload": {"n": 0}}, {"region": "ap", "id": 1})
    middle = rows(conn)
    call(conn, "tx_savepoint", tx, "sp")
    execute(conn, tx, "events", "update", {"region": "eu", "id": 3}, {"region": "ap", "id": 1})
    header_write(conn, tx, "delete from events_eu where id = 1")
    call(conn, "tx_rollback_to", tx, "sp")
    assert rows(conn) == middle


@pytest.mark.parametrize(
    "child",
    [
        "create table events_eu partition of events for values in ('eu')",
        "create table events_old (like events including all) ;"
        " alter table events attach partition events_old for values in ('old')",
    ],
    ids=["partition_of", "attach_partition"],
)
def test_a_partition_is_refused_with_a_hint_naming_its_parent(conn, child):
    conn.execute("""
        create table events (region text not null, id integer not null, primary key (region, id))
            partition by list (region);
    """)
    conn.execute(child)
    name = "events_eu" if "events_eu" in child else "events_old"
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.manage_table(%s)", (name,))
    # Expected: an invalid argument (22023, as for other unmanageable tables)
    # or wrong_object_type (42809); the hint says to manage the parent.
    assert caught.value.sqlstate in ("22023", "42809"), caught.value.sqlstate
    assert "events" in (caught.value.diag.message_hint or "").replace(name, "")


def test_an_inheritance_child_is_refused_with_a_hint_naming_its_parent(conn):
    conn.execute("""
        create table animal (id integer primary key, name text);
        create table dog (good boolean default true, primary key (id)) inherits (animal);
    """)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.manage_table('dog')")
    assert caught.value.sqlstate in ("22023", "42809"), caught.value.sqlstate
    assert "animal" in (caught.value.diag.message_hint or "")


def test_a_claim_cannot_be_bypassed_through_the_parent_or_the_partition(conn, dsn):
    conn.execute(PARTITIONED)
    tx = begin(conn)
    execute(conn, tx, "events", "update", {"payload": {"claimed": True}}, {"region": "eu", "id": 1})
    before = rows(conn)
    with psycopg.connect(dsn, autocommit=True) as other:
        for statement in (
            "update events set payload = '1' where region = 'eu' and id = 1",
            "update events_eu set payload = '1' where id = 1",
            "delete from events where region = 'eu'",
            "delete from events_eu where id = 1",
            "update events set region = 'zz' where region = 'eu' and id = 1",
        ):
            assert raises(other, statement) == "55P03", statement
        other_tx = begin(other)
        with pytest.raises(psycopg.Error) as caught:
            execute(other, other_tx, "events", "delete", match={"region": "eu", "id": 1})
        assert caught.value.sqlstate == "55P03"
        # Unclaimed rows of the same partition stay writable.
        assert raises(other, "update events_eu set payload = '2' where id = 2") is None
    assert [r for r in rows(conn) if ",eu,1," in r] == [r for r in before if ",eu,1," in r]


# ---------------------------------------------------------------------- lock

ACCOUNTS = """
create table accounts (id integer primary key, owner text, balance numeric(12, 2) not null);
insert into accounts values (1, 'ann', 100.00), (2, 'bob', 50.00), (3, 'cy', 0);
select resilience.manage_table('accounts');
"""


def table(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("select a::text from accounts as a order by id")]


def test_lock_returns_the_matched_rows_and_writes_nothing(conn):
    conn.execute(ACCOUNTS)
    before = table(conn)
    tx = begin(conn)
    locked = execute(conn, tx, "accounts", "lock", match={"owner": "ann"})
    assert locked["success"] is True and locked["count"] == 1
    assert locked["data"] == [{"id": 1, "owner": "ann", "balance": 100.00}]
    assert execute(conn, tx, "accounts", "lock", match={"owner": "nobody"})["count"] == 0
    assert table(conn) == before
    assert call(conn, "tx_status", tx)["status"] == "active"


def test_locked_rows_fail_other_writers_at_once(conn, dsn):
    conn.execute(ACCOUNTS)
    tx = begin(conn)
    execute(conn, tx, "accounts", "lock", match={"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        assert raises(other, "update accounts set balance = 0 where id = 1") == "55P03"
        assert raises(other, "delete from accounts where id = 1") == "55P03"
        other_tx = begin(other)
        for operation, data in (("update", {"balance": 1}), ("delete", None), ("lock", None)):
            with pytest.raises(psycopg.Error) as caught:
                execute(other, other_tx, "accounts", operation, data, {"id": 1})
            assert caught.value.sqlstate == "55P03", operation
        # Another row is free.
        assert execute(other, other_tx, "accounts", "lock", match={"id": 2})["count"] == 1
        assert raises(other, "update accounts set balance = 1 where id = 3") is None


@pytest.mark.parametrize("end", ["tx_commit", "tx_rollback"])
def test_commit_and_rollback_release_locks(conn, dsn, end):
    conn.execute(ACCOUNTS)
    before = table(conn)
    tx = begin(conn)
    execute(conn, tx, "accounts", "lock", match={"id": 1})
    result = call(conn, end, tx)
    assert result["success"] is True
    assert table(conn) == before  # a lock alone changes nothing either way
    with psycopg.connect(dsn, autocommit=True) as other:
        assert raises(other, "update accounts set balance = 1 where id = 1") is None


def test_lock_then_write_then_rollback_restores(conn):
    conn.execute(ACCOUNTS)
    before = table(conn)
    tx = begin(conn)
    [row] = execute(conn, tx, "accounts", "lock", match={"id": 1})["data"]
    execute(conn, tx, "accounts", "update", {"balance": row["balance"] - 30}, {"id": 1})
    call(conn, "tx_rollback", tx)
    assert table(conn) == before


def test_lock_needs_a_match(conn):
    conn.execute(ACCOUNTS)
    tx = begin(conn)
    for match in (None, {}):
        with pytest.raises(psycopg.Error) as caught:
            execute(conn, tx, "accounts", "lock", match=match)
        assert caught.value.sqlstate == "22023"


def test_read_modify_write_under_lock_loses_no_update(conn, dsn):
    """Two clients withdraw from one account, each in separate calls:
    lock (read), decide, update, commit. The second waits its turn (55P03,
    retry), reads the first one's result, and no withdrawal is lost."""
    conn.execute(ACCOUNTS)
    with psycopg.connect(dsn, autocommit=True) as other:
        first = begin(conn)
        second = begin(other)
        [seen] = execute(conn, first, "accounts", "lock", match={"id": 1})["data"]
        with pytest.raises(psycopg.Error) as caught:
            execute(other, second, "accounts", "lock", match={"id": 1})
        assert caught.value.sqlstate == "55P03"
        execute(conn, first, "accounts", "update", {"balance": seen["balance"] - 30}, {"id": 1})
        call(conn, "tx_commit", first)
        [seen] = execute(other, second, "accounts", "lock", match={"id": 1})["data"]
        assert seen["balance"] == 70
        execute(other, second, "accounts", "update", {"balance": seen["balance"] - 20}, {"id": 1})
        call(other, "tx_commit", second)
    assert conn.execute("select balance from accounts where id = 1").fetchone() == (50,)


def test_python_client_lock(conn, dsn):
    conn.execute(ACCOUNTS)
    manager = TransactionManager(dsn)
    try:
        with manager.transaction() as tx:
            [row] = tx.lock("accounts", {"id": 2})
            assert row["balance"] == 50
            with psycopg.connect(dsn, autocommit=True) as other:
                assert raises(other, "update accounts set balance = 0 where id = 2") == "55P03"
            tx.update("accounts", {"balance": row["balance"] + 5}, match={"id": 2})
        with manager.transaction() as tx:
            tx.lock("accounts", {"id": 2})
            with pytest.raises(ClaimConflict):
                with manager.transaction() as rival:
                    rival.lock("accounts", {"id": 2})
    finally:
        manager.close()
    assert conn.execute("select balance from accounts where id = 2").fetchone() == (55,)
