"""Errors while restoring (issue 10, items 5 and 6).

Each scenario sets up a logical transaction whose undo must fail: a unique
value re-used on another column (after a delete, and after an update), an FK
whose parent went away, a check or NOT NULL added since, an exclusion
constraint, a user trigger that raises. The guards cannot prevent these: the
conflicting write touches other rows, or is DDL.

Item 5: an explicit tx_rollback gives RZ005, names the rows and the
constraint, and changes nothing; no row is ever skipped silently.
Item 6: the same reached through expiry is contained: the transaction becomes
`failed`, an audit `conflict` row records the SQLSTATE, its claims are
released, its images kept for an admin (tx_images), tx_reap finishes and goes
on with the next transaction, and other users' tx_begin, tx_execute,
tx_pre_request and plain writes never notice."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import begin, begin_as, call, execute, request


@dataclass
class Scenario:
    """setup(conn) -> tx id; the rows and constraint the error must name;
    the underlying SQLSTATE; a write that works once the claims are gone."""

    setup: Callable[[psycopg.Connection[Any]], str]
    tables: tuple[str, ...]
    key: int
    names: tuple[str, ...]  # the error names one of these (constraint, column, trigger)
    sqlstate: str
    after_release: str


def unique_after_delete(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table uq (id integer primary key, u integer constraint uq_u unique, v text);
        insert into uq values (1, 5, 'a'), (2, 6, 'b');
        select resilience.manage_table('uq');
    """)
    tx = begin(conn)
    execute(conn, tx, "uq", "delete", match={"id": 1})
    conn.execute("insert into uq values (3, 5, 'reused')")  # key 3 is nobody's claim
    return tx


def unique_after_update(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table uq (id integer primary key, u integer constraint uq_u unique, v text);
        insert into uq values (1, 5, 'a'), (2, 6, 'b');
        select resilience.manage_table('uq');
    """)
    tx = begin(conn)
    execute(conn, tx, "uq", "update", {"u": 7}, {"id": 1})
    conn.execute("update uq set u = 5 where id = 2")
    return tx


def foreign_key(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table parent (id integer primary key);
        create table child (id integer primary key,
            parent_id integer constraint child_parent_fk references parent (id));
        insert into parent values (1), (2);
        insert into child values (1, 1);
        select resilience.manage_table('parent');
        select resilience.manage_table('child');
    """)
    tx = begin(conn)
    execute(conn, tx, "child", "delete", match={"id": 1})
    conn.execute("delete from parent where id = 1")  # no child left: allowed
    return tx


def check_added(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table checked (id integer primary key, v integer);
        insert into checked values (1, -1), (2, 2);
        select resilience.manage_table('checked');
    """)
    tx = begin(conn)
    execute(conn, tx, "checked", "delete", match={"id": 1})
    conn.execute("alter table checked add constraint v_not_negative check (v >= 0) not valid")
    return tx


def not_null_added(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table nullable (id integer primary key, must text);
        insert into nullable values (1, null), (2, 'b');
        select resilience.manage_table('nullable');
    """)
    tx = begin(conn)
    execute(conn, tx, "nullable", "delete", match={"id": 1})
    conn.execute("alter table nullable alter column must set not null")
    return tx


def exclusion(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table booking (id integer primary key, r int4range,
            constraint no_overlap exclude using gist (r with &&));
        insert into booking values (1, '[1,5)'), (2, '[10,20)');
        select resilience.manage_table('booking');
    """)
    tx = begin(conn)
    execute(conn, tx, "booking", "delete", match={"id": 1})
    conn.execute("insert into booking values (3, '[2,3)')")
    return tx


def user_trigger(conn: psycopg.Connection[Any]) -> str:
    conn.execute("""
        create table guarded (id integer primary key, v text);
        insert into guarded values (1, 'a'), (2, 'b');
        select resilience.manage_table('guarded');
    """)
    tx = begin(conn)
    execute(conn, tx, "guarded", "update", {"v": "changed"}, {"id": 1})
    conn.execute("""
        create function refuse_a() returns trigger language plpgsql as $$
        begin
            if new.v = 'a' then
                raise exception 'app rule: a is retired' using errcode = 'P0001';
            end if;
            return new;
        end $$;
        create trigger app_guard before insert or update on guarded
            for each row execute function refuse_a();
    """)
    return tx


SCENARIOS = {
    "unique_on_another_column_after_delete": Scenario(
        unique_after_delete, ("uq",), 1, ("uq_u",), "23505", "insert into uq values (1, 9, 'x')"
    ),
    "unique_on_another_column_after_update": Scenario(
        unique_after_update, ("uq",), 1, ("uq_u",), "23505", "update uq set v = 'x' where id = 1"
    ),
    "foreign_key": Scenario(
        foreign_key,
        ("parent", "child"),
        1,
        ("child_parent_fk",),
        "23503",
        "insert into child values (1, 2)",
    ),
    "check": Scenario(
        check_added,
        ("checked",),
        1,
        ("v_not_negative",),
        "23514",
        "insert into checked values (1, 3)",
    ),
    "not_null": Scenario(
        not_null_added, ("nullable",), 1, ("must",), "23502", "insert into nullable values (1, 'x')"
    ),
    "exclusion": Scenario(
        exclusion,
        ("booking",),
        1,
        ("no_overlap",),
        "23P01",
        "insert into booking values (1, '[40,41)')",
    ),
    "user_trigger": Scenario(
        user_trigger,
        ("guarded",),
        1,
        ("app_guard", "refuse_a", "app rule: a is retired"),
        "P0001",
        "update guarded set v = 'again' where id = 1",
    ),
}


def state(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        t: [
            r[0]
            for r in conn.execute(
                sql.SQL("select x::text from {} as x order by 1").format(sql.Identifier(t))
            )
        ]
        for t in tables
    }


def names_the_key(text: str, key: int) -> bool:
    """The key appears as jsonb ({"id": 1}) or as PostgreSQL writes it ((id)=(1))."""
    return bool(re.search(rf'"id"\s*:\s*{key}\b|\(id\)=\({key}\)', text))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_restore_error_is_rz005_naming_rows_and_constraint_and_changes_nothing(conn, name):
    scenario = SCENARIOS[name]
    tx = scenario.setup(conn)
    before = state(conn, scenario.tables)
    with pytest.raises(psycopg.Error) as caught:
        call(conn, "tx_rollback", tx)
    error = caught.value
    assert error.sqlstate == "RZ005", (error.sqlstate, str(error))
    said = " ".join(
        filter(
            None, [error.diag.message_primary, error.diag.message_detail, error.diag.message_hint]
        )
    )
    assert names_the_key(said, scenario.key), said
    assert any(n in said for n in scenario.names), said
    assert state(conn, scenario.tables) == before
    # Still active: nothing was marked done either.
    assert call(conn, "tx_status", tx)["status"] == "active"


@pytest.fixture
def others(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A table another user (PostgREST's `authenticated`, sub user-b) works in."""
    conn.execute("""
        create table notes (id serial primary key, body text);
        select resilience.manage_table('notes');
        grant usage on schema public to authenticated;
        grant all on notes to authenticated;
        grant usage on all sequences in schema public to authenticated;
    """)
    return conn


def expire(conn: psycopg.Connection[Any], tx: str) -> None:
    """Make the transaction expired now (its timeout passed)."""
    conn.execute(
        "update resilience.transactions set expires_at = started_at + interval '1 microsecond'"
        " where id = %s",
        (tx,),
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_restore_error_through_expiry_is_contained(others, name):
    conn = others
    scenario = SCENARIOS[name]
    tx = scenario.setup(conn)
    # A second expired transaction, after the failing one: the reaper goes on.
    plain_tx = begin(conn)
    execute(conn, plain_tx, "notes", "insert", {"body": "undo me"})
    expire(conn, tx)
    expire(conn, plain_tx)
    before = state(conn, scenario.tables)

    # Other users notice nothing (each of these reaps lazily).
    other_tx = begin_as(conn, "user-b")
    request(
        conn,
        "user-b",
        "select resilience.tx_execute(%s, 'notes', 'insert', '{\"body\": \"b\"}')",
        params=(other_tx,),
    )
    request(conn, "user-b", "select 1", pre_request=True)
    request(conn, "user-b", "insert into notes (body) values ('plain')")
    request(conn, "user-b", "select resilience.tx_commit(%s)", params=(other_tx,))

    reaped = call(conn, "tx_reap", 100)
    assert isinstance(reaped, int)
    assert call(conn, "tx_reap", 100) == 0  # nothing left to do, nothing stuck

    assert call(conn, "tx_status", tx)["status"] == "failed"
    assert call(conn, "tx_status", plain_tx)["status"] == "timed_out"
    assert conn.execute("select body from notes order by id").fetchall() == [("b",), ("plain",)]
    assert state(conn, scenario.tables) == before  # the failed undo restored nothing

    conflicts = conn.execute(
        "select detail from resilience.audit_log where tx_id = %s and event = 'conflict'", (tx,)
    ).fetchall()
    assert len(conflicts) == 1
    assert scenario.sqlstate in json.dumps(conflicts[0][0])

    images = conn.execute("select * from resilience.tx_images(%s)", (tx,)).fetchall()
    assert images, "images are kept for an admin to retry with force"

    conn.execute(scenario.after_release)  # claims released: no 55P03


def test_rz005_of_a_long_transaction_stays_readable(conn):
    """300 captured statements, every row changed behind the claims (triggers
    off, as an owner may do): RZ005 names the first steps and the count, and
    its detail carries the first 100 conflicts and the total, never a
    message of every step."""
    conn.execute("""
        create table many (id integer primary key, v text);
        select resilience.manage_table('many');
    """)
    tx = begin(conn)
    for i in range(300):
        execute(conn, tx, "many", "insert", data={"id": i, "v": "a"})
    conn.execute("alter table many disable trigger user")
    conn.execute("update many set v = 'changed behind the claims'")
    conn.execute("alter table many enable trigger user")
    with pytest.raises(psycopg.Error) as caught:
        call(conn, "tx_rollback", tx)
    error = caught.value
    assert error.sqlstate == "RZ005"
    assert error.diag.message_primary is not None and len(error.diag.message_primary) < 1000
    assert "295 more steps" in error.diag.message_primary
    detail = json.loads(error.diag.message_detail or "{}")
    assert detail["conflict_count"] == 300 and len(detail["conflicts"]) == 100
    changed = conn.execute("select count(*) from many where v = 'changed behind the claims'")
    assert changed.fetchone() == (300,)  # nothing restored
