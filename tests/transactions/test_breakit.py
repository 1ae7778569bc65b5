"""Hostile review: each test is a broken promise of DESIGN.md section 1."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute


@pytest.mark.parametrize(
    "raise_statement",
    [
        "raise exception using errcode = 'query_canceled', message = 'no undo'",
        "assert false, 'no undo'",
    ],
    ids=["query_canceled", "assert_failure"],
)
def test_reap_contains_undo_errors_that_when_others_does_not_catch(
    conn: psycopg.Connection[Any], make_role: Callable[..., str], raise_statement: str
) -> None:
    """Containment (DESIGN 1, Timeouts): a transaction whose undo fails for ANY
    reason becomes failed and the reaper goes on; no call of another user
    (tx_begin) ever fails because of it. PL/pgSQL `when others` catches
    neither query_canceled (57014) nor assert_failure (P0004), so a user
    trigger raising one during the undo escapes tx_reap and fails every other
    user's tx_begin, and the expired transaction stays active for good."""
    conn.execute(
        """
        create table bk_a (id int primary key, v text);
        select resilience.manage_table('bk_a');
        create function bk_a_guard() returns trigger language plpgsql as $body$
        begin
            if current_setting('resilience.restoring', true) <> '' then
                RAISE_STATEMENT;
            end if;
            return null;
        end $body$;
        create trigger bk_a_guard after delete on bk_a for each row execute function bk_a_guard();
        """.replace("RAISE_STATEMENT", raise_statement)
    )
    tx = begin(conn, 100)
    execute(conn, tx, "bk_a", "insert", {"id": 1, "v": "x"})
    time.sleep(0.3)  # let it expire (no timing is asserted)
    other = make_role("bk_other", member_of=("resilience_user",))
    with psycopg.connect(other, autocommit=True) as b:
        assert b.execute("select resilience.tx_begin()").fetchone() is not None
    assert call(conn, "tx_status", tx)["status"] == "failed"


def test_undo_does_not_run_user_triggers_with_package_privileges(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """Audit (DESIGN 1): clients can write no audit row, through any function.
    The undo runs SECURITY DEFINER as the package owner (the superuser who
    installed), and user triggers fire during it: a plain table owner's
    trigger then runs with superuser rights -- here it forges an audit row;
    it could as well `alter role ... superuser`."""
    evil = make_role("bk_evil", member_of=("resilience_user",))
    conn.execute("grant create on schema public to bk_evil")
    with psycopg.connect(evil, autocommit=True) as e:
        e.execute("""
            create table bk_evil_t (id int primary key);
            select resilience.manage_table('bk_evil_t');
            create function bk_evil_trg() returns trigger language plpgsql as $body$
            begin
                begin
                    insert into resilience.audit_log (event, actor_role, detail)
                    values ('commit', 'somebody_else', '{"forged": true}');
                exception when insufficient_privilege then
                    null;
                end;
                return null;
            end $body$;
            create trigger bk_evil_trg after delete on bk_evil_t
                for each row execute function bk_evil_trg();
        """)
        tx = begin(e)
        execute(e, tx, "bk_evil_t", "insert", {"id": 1})
        assert call(e, "tx_rollback", tx)["success"]
    forged = conn.execute(
        "select count(*) from resilience.audit_log where detail ? 'forged'"
    ).fetchone()
    assert forged == (0,)


def test_key_swap_in_one_statement_rolls_back(conn: psycopg.Connection[Any]) -> None:
    conn.execute("""
        create table bk_swap (id int, v text, constraint bk_swap_pk primary key (id) deferrable initially deferred);
        insert into bk_swap values (1, 'one'), (2, 'two');
        select resilience.manage_table('bk_swap');
    """)
    before = conn.execute("select t::text from bk_swap t order by 1").fetchall()
    tx = begin(conn)
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        conn.execute("update bk_swap set id = 3 - id")
    res = call(conn, "tx_rollback", tx)
    assert res["success"], res
    assert conn.execute("select t::text from bk_swap t order by 1").fetchall() == before


def test_multi_column_key_change_rolls_back(conn: psycopg.Connection[Any]) -> None:
    conn.execute("""
        create table "select" ("from" text, "where" int, "n" int, "tx_id" uuid, "claim" bool, "o" text, "w" int,
            primary key ("where", "from"));
        insert into "select" values ('a', 1, 1, null, true, 'o', 0), ('b', 2, 2, null, false, 'p', 1);
        select resilience.manage_table('"select"');
    """)
    before = conn.execute('select t::text from "select" t order by 1').fetchall()
    tx = begin(conn)
    execute(
        conn,
        tx,
        "select",
        "update",
        {"where": 3, "from": "z", "claim": None},
        {"where": 1, "from": "a"},
    )
    execute(conn, tx, "select", "insert", {"where": 1, "from": "a", "n": 9})
    execute(conn, tx, "select", "delete", None, {"where": 2, "from": "b"})
    execute(conn, tx, "select", "upsert", {"where": 2, "from": "b", "n": 7})
    res = call(conn, "tx_rollback", tx)
    assert res["success"], res
    assert conn.execute('select t::text from "select" t order by 1').fetchall() == before


def test_partition_move_rolls_back(conn: psycopg.Connection[Any]) -> None:
    conn.execute("""
        create table bk_p (k int, id int, v text, primary key (k, id)) partition by list (k);
        create table bk_p1 partition of bk_p for values in (1);
        create table bk_p2 partition of bk_p for values in (2) partition by range (id);
        create table bk_p2a partition of bk_p2 for values from (0) to (100);
        create table bk_pd partition of bk_p default;
        insert into bk_p values (1, 1, 'a'), (2, 5, 'b'), (9, 9, 'c');
        select resilience.manage_table('bk_p');
    """)
    before = conn.execute(
        "select tableoid::regclass::text, t::text from bk_p t order by 2"
    ).fetchall()
    tx = begin(conn)
    execute(conn, tx, "bk_p", "update", {"k": 2}, {"k": 1, "id": 1})
    execute(conn, tx, "bk_p", "update", {"k": 7}, {"k": 2, "id": 5})
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        conn.execute("update bk_pd set v = 'zz'")
        conn.execute("insert into bk_p2a values (2, 50, 'new')")
    res = call(conn, "tx_rollback", tx)
    assert res["success"], res
    after = conn.execute(
        "select tableoid::regclass::text, t::text from bk_p t order by 2"
    ).fetchall()
    assert after == before
