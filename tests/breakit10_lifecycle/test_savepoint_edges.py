"""Savepoint edges: names, another transaction's savepoint, claims given
back by rollback_to, FK cascades after a savepoint, expired transactions."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from breakit10_lifecycle.support import audit, call, clients, connect, expire, rows, sqlstate

EXEC = "select resilience.tx_execute(%s, "


def _tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "create table parent (id int primary key, name text);"
        "create table child (id int primary key,"
        " parent_id int references parent (id) on delete cascade on update cascade, v int);"
        "insert into parent values (1, 'p1'), (2, 'p2');"
        "insert into child values (10, 1, 0), (11, 1, 1), (20, 2, 2);"
        "select resilience.manage_table('parent'); select resilience.manage_table('child');"
        "grant select, insert, update, delete on parent, child to resilience_user;"
    )


def test_savepoint_names_null_empty_long_quotes_unicode(conn, make_role):
    """A user would see a savepoint name refused with an undocumented
    SQLSTATE, or two distinct names (quotes, unicode, 200 characters, names
    differing only after 63 bytes or in trailing spaces) treated as one."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice:
        tx = call(alice, "select resilience.tx_begin()")
        with sqlstate("22023"):
            call(alice, "select resilience.tx_savepoint(%s, null)", tx)
        with sqlstate("22023"):
            call(alice, "select resilience.tx_savepoint(%s, '')", tx)
        with sqlstate("22023"):
            call(alice, "select resilience.tx_savepoint(%s, %s)", tx, "é" * 201)
        with sqlstate("RZ006"):
            call(alice, "select resilience.tx_rollback_to(%s, null)", tx)
        with sqlstate("RZ006"):
            call(alice, "select resilience.tx_rollback_to(%s, '')", tx)
        names = ["é" * 200, "é" * 199 + "e", "q\"'; drop table parent; --", "a", "a ", "A", "🚀"]
        for number, name in enumerate(names):
            call(alice, "select resilience.tx_savepoint(%s, %s)", tx, name)
            call(
                alice,
                "select resilience.tx_execute(%s, 'child', 'update', %s, %s)",
                tx,
                Jsonb({"v": 100 + number}),
                Jsonb({"id": 10}),
            )
        status = call(alice, "select resilience.tx_status(%s)", tx)
        assert status["savepoints"] == names
        for number in reversed(range(len(names))):
            call(alice, "select resilience.tx_rollback_to(%s, %s)", tx, names[number])
            expected = 100 + number - 1 if number else 0
            assert call(conn, "select v from child where id = 10") == expected, names[number]
            assert (
                call(alice, "select resilience.tx_status(%s)", tx)["savepoints"]
                == names[: number + 1]
            )
        call(alice, "select resilience.tx_commit(%s)", tx)
        events = [e[0] for e in audit(conn, tx)]
        assert events.count("savepoint") == len(names)


def test_savepoint_of_another_transaction_is_not_found(conn, make_role):
    """A user would see rollback_to reach a savepoint of another
    transaction (theirs or someone else's), or learn it exists."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        mine = call(alice, "select resilience.tx_begin()")
        other_mine = call(alice, "select resilience.tx_begin()")
        theirs = call(bob, "select resilience.tx_begin()")
        call(bob, "select resilience.tx_savepoint(%s, 'sp')", theirs)
        call(alice, "select resilience.tx_savepoint(%s, 'sp2')", other_mine)
        with sqlstate("RZ006"):
            call(alice, "select resilience.tx_rollback_to(%s, 'sp')", mine)
        with sqlstate("RZ006"):
            call(alice, "select resilience.tx_rollback_to(%s, 'sp2')", mine)
        # Bob's transaction itself: not found for Alice, whatever she calls.
        with sqlstate("RZ001"):
            call(alice, "select resilience.tx_rollback_to(%s, 'sp')", theirs)
        with sqlstate("RZ001"):
            call(alice, "select resilience.tx_savepoint(%s, 'x')", theirs)
        with sqlstate("RZ001"):
            call(alice, "select resilience.tx_rollback_to(%s, 'nope')", theirs)
        assert call(alice, "select count(*) from resilience.savepoints") == 1
        assert (
            call(alice, "select count(*) from resilience.savepoints where tx_id = %s", theirs) == 0
        )


def test_rollback_to_gives_back_claims_taken_after_the_savepoint(conn, make_role):
    """A user would see a row the transaction wrote only after the savepoint
    stay claimed after rollback_to (others blocked), or a row written before
    it released (others could overwrite what the transaction still holds)."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin()")
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 5}', '{\"id\": 10}')",
            tx,
        )
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", tx)
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 6}', '{\"id\": 10}')",
            tx,
        )
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 7}', '{\"id\": 11}')",
            tx,
        )
        call(alice, "select resilience.tx_execute(%s, 'child', 'lock', null, '{\"id\": 20}')", tx)
        call(
            alice,
            "select resilience.tx_execute(%s, 'parent', 'insert', '{\"id\": 3, \"name\": \"p3\"}')",
            tx,
        )
        assert call(alice, "select resilience.tx_status(%s)", tx)["claims"] == 4
        result = call(alice, "select resilience.tx_rollback_to(%s, 'sp')", tx)
        assert result["restored_rows"] == 3
        assert call(alice, "select resilience.tx_status(%s)", tx)["claims"] == 1
        assert rows(conn, "child") == ["(10,1,5)", "(11,1,1)", "(20,2,2)"]
        assert rows(conn, "parent") == ["(1,p1)", "(2,p2)"]
        # Released to a plain write and to another logical transaction.
        bob.execute("update child set v = 70 where id = 11")
        other = call(bob, "select resilience.tx_begin()")
        call(
            bob,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 71}', '{\"id\": 20}')",
            other,
        )
        call(
            bob,
            "select resilience.tx_execute(%s, 'parent', 'insert', %s)",
            other,
            Jsonb({"id": 3, "name": "bob"}),
        )
        # Still held: the row written before the savepoint.
        with sqlstate("55P03"):
            bob.execute("update child set v = 0 where id = 10")
        with sqlstate("55P03"):
            call(
                bob,
                "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 0}', '{\"id\": 10}')",
                other,
            )
        call(bob, "select resilience.tx_commit(%s)", other)
        # Alice's rollback restores her row only, not Bob's since.
        call(alice, "select resilience.tx_rollback(%s)", tx)
        assert rows(conn, "child") == ["(10,1,0)", "(11,1,70)", "(20,2,71)"]
        assert rows(conn, "parent") == ["(1,p1)", "(2,p2)", "(3,bob)"]


def test_rollback_to_undoes_fk_cascade_then_more_writes(conn, make_role):
    """A user would see children deleted (or re-keyed) by an FK cascade after
    a savepoint stay gone after rollback_to, or the rows written again after
    the rollback_to come out wrong at the final rollback."""
    dsns = clients(make_role, conn)
    _tables(conn)
    ref = psycopg.connect(conn.info.dsn, autocommit=True)
    ref.execute(
        "create table rparent (id int primary key, name text);"
        "create table rchild (id int primary key,"
        " parent_id int references rparent (id) on delete cascade on update cascade, v int);"
        "insert into rparent values (1, 'p1'), (2, 'p2');"
        "insert into rchild values (10, 1, 0), (11, 1, 1), (20, 2, 2);"
    )
    steps = [
        (
            "update",
            "parent",
            {"name": "P1"},
            {"id": 1},
            "update rparent set name = 'P1' where id = 1",
        ),
        ("sp", "outer", None, None, "savepoint outer_sp"),
        ("delete", "parent", None, {"id": 1}, "delete from rparent where id = 1"),
        ("sp", "inner", None, None, "savepoint inner_sp"),
        ("update", "parent", {"id": 5}, {"id": 2}, "update rparent set id = 5 where id = 2"),
        ("check_inner", "inner", None, None, "rollback to savepoint inner_sp"),
        ("update", "parent", {"id": 6}, {"id": 2}, "update rparent set id = 6 where id = 2"),
        (
            "insert",
            "child",
            {"id": 21, "parent_id": 6, "v": 9},
            None,
            "insert into rchild values (21, 6, 9)",
        ),
        ("check_outer", "outer", None, None, "rollback to savepoint outer_sp"),
        ("update", "child", {"v": 50}, {"id": 10}, "update rchild set v = 50 where id = 10"),
        ("delete", "parent", None, {"id": 2}, "delete from rparent where id = 2"),
        ("check_outer", "outer", None, None, "rollback to savepoint outer_sp"),
        ("update", "child", {"v": 51}, {"id": 11}, "update rchild set v = 51 where id = 11"),
    ]
    with connect(dsns["lc_alice"]) as alice:
        for final in ("rollback", "commit"):
            tx = call(alice, "select resilience.tx_begin()")
            ref.execute("begin")
            for kind, target, data, match, statement in steps:
                ref.execute(statement)
                if kind == "sp":
                    call(alice, "select resilience.tx_savepoint(%s, %s)", tx, target)
                elif kind.startswith("check"):
                    call(alice, "select resilience.tx_rollback_to(%s, %s)", tx, target)
                    assert rows(conn, "parent") == rows(ref, "rparent"), statement
                    assert rows(conn, "child") == rows(ref, "rchild"), statement
                else:
                    call(
                        alice,
                        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
                        tx,
                        target,
                        kind,
                        Jsonb(data) if data is not None else None,
                        Jsonb(match) if match is not None else None,
                    )
            call(alice, f"select resilience.tx_{final}(%s)", tx)
            ref.execute(final)
            assert rows(conn, "parent") == rows(ref, "rparent"), final
            assert rows(conn, "child") == rows(ref, "rchild"), final
    ref.close()


def test_savepoint_calls_on_finished_or_expired_transactions(conn, make_role):
    """A user would see tx_savepoint / tx_rollback_to act on a transaction
    that is committed, rolled back, expired or timed out, or fail with a
    SQLSTATE other than the documented RZ002 / RZ003."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice:
        done = call(alice, "select resilience.tx_begin()")
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", done)
        call(alice, "select resilience.tx_commit(%s)", done)
        with sqlstate("RZ002"):
            call(alice, "select resilience.tx_savepoint(%s, 'sp')", done)
        with sqlstate("RZ002"):
            call(alice, "select resilience.tx_rollback_to(%s, 'sp')", done)
        expired = call(alice, "select resilience.tx_begin(60000)")
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 9}', '{\"id\": 10}')",
            expired,
        )
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", expired)
        expire(conn, expired)
        for statement in (
            "select resilience.tx_savepoint(%s, 'sp2')",
            "select resilience.tx_rollback_to(%s, 'sp')",
            "select resilience.tx_commit(%s)",
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 1}', '{\"id\": 10}')",
        ):
            with sqlstate("RZ003"):
                call(alice, statement, expired)
        assert call(conn, "select resilience.tx_reap()") == 1
        assert call(alice, "select resilience.tx_status(%s)", expired)["status"] == "timed_out"
        assert call(conn, "select v from child where id = 10") == 0
        for statement in (
            "select resilience.tx_savepoint(%s, 'sp2')",
            "select resilience.tx_rollback_to(%s, 'sp')",
            "select resilience.tx_commit(%s)",
        ):
            with sqlstate("RZ003"):
                call(alice, statement, expired)


def test_rollback_to_refuses_to_cascade_into_rows_others_wrote_since(conn, make_role):
    """A user would see rollback_to delete (through ON DELETE CASCADE) a row
    another user wrote since, referencing a row the transaction inserted
    after the savepoint: the documented refusal (RZ005, 23503) holds for
    rollback_to as for tx_rollback, and nothing is restored."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin()")
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", tx)
        call(alice, "select resilience.tx_execute(%s, 'parent', 'insert', '{\"id\": 3}')", tx)
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 7}', '{\"id\": 10}')",
            tx,
        )
        bob.execute("insert into child values (30, 3, 0)")
        with pytest.raises(psycopg.Error) as caught:
            call(alice, "select resilience.tx_rollback_to(%s, 'sp')", tx)
        assert caught.value.sqlstate == "RZ005"
        assert "23503" in (caught.value.diag.message_detail or "")
        assert rows(conn, "child") == ["(10,1,7)", "(11,1,1)", "(20,2,2)", "(30,3,0)"]
        assert rows(conn, "parent") == ["(1,p1)", "(2,p2)", "(3,)"]
        status = call(alice, "select resilience.tx_status(%s)", tx)
        assert (status["status"], status["operations"], status["savepoints"]) == (
            "active",
            2,
            ["sp"],
        )
        bob.execute("delete from child where id = 30")
        call(alice, "select resilience.tx_rollback_to(%s, 'sp')", tx)
        assert rows(conn, "parent") == ["(1,p1)", "(2,p2)"]
        assert rows(conn, "child") == ["(10,1,0)", "(11,1,1)", "(20,2,2)"]


def test_rollback_to_gives_back_a_table_it_no_longer_claims(conn, make_role):
    """The table's owner would see unmanage_table refused (55006, 'rows of
    the table are claimed') while the only rows of it the transaction ever
    claimed were given back by rollback_to; and the transaction would claim
    that table's rows wrongly when it writes it again."""
    dsns = clients(make_role, conn)
    _tables(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin()")
        call(
            alice,
            "select resilience.tx_execute(%s, 'child', 'update', '{\"v\": 5}', '{\"id\": 10}')",
            tx,
        )
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", tx)
        call(
            alice,
            EXEC + "'parent', 'update', %s, %s)",
            tx,
            Jsonb({"name": "x"}),
            Jsonb({"id": 1}),
        )
        call(alice, "select resilience.tx_rollback_to(%s, 'sp')", tx)
        conn.execute("select resilience.unmanage_table('parent')")
        with sqlstate("55006"):
            conn.execute("select resilience.unmanage_table('child')")
        conn.execute("select resilience.manage_table('parent')")
        call(
            alice,
            EXEC + "'parent', 'update', %s, %s)",
            tx,
            Jsonb({"name": "y"}),
            Jsonb({"id": 2}),
        )
        with sqlstate("55P03"):
            bob.execute("update parent set name = 'bob' where id = 2")
        bob.execute("update parent set name = 'bob' where id = 1")
        call(alice, "select resilience.tx_rollback(%s)", tx)
        assert rows(conn, "parent") == ["(1,bob)", "(2,p2)"]
        assert rows(conn, "child") == ["(10,1,0)", "(11,1,1)", "(20,2,2)"]
