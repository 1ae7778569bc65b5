"""Helpers of the fifth review's attacks on logical transactions' lifecycle:
savepoints, expiry and reaping, races between sessions, and faults (a backend
terminated, killed, frozen; an immediate shutdown).

Every call is one database transaction on an autocommit connection, as a
client's RPC call is. Faults are placed deterministically: a user trigger on
the managed table waits on an advisory lock the test holds (``gate``), so
the statement under attack is known to be *inside* its undo (or write) when
the test strikes; the test waits for that by watching pg_stat_activity, never
by sleeping a guessed time."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

# The advisory lock key a gated trigger waits on.
GATE_KEY = 5151


def call(conn: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    """resilience.<function>(args...) -> its single value (jsonb args as Jsonb)."""
    values = [Jsonb(a) if isinstance(a, dict | list) else a for a in args]
    statement = sql.SQL("select {}.{}({})").format(
        sql.Identifier("resilience"),
        sql.Identifier(function),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    row = conn.execute(statement, values).fetchone()
    assert row is not None
    return row[0]


def sqlstate_of(action: Callable[..., Any], *args: Any) -> str | None:
    """The SQLSTATE ``action(*args)`` failed with, or None when it succeeded."""
    try:
        action(*args)
    except psycopg.Error as error:
        return error.sqlstate
    return None


def rows_text(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Every row of ``table`` as ``row::text``, in key order (column ``id``)."""
    statement = sql.SQL("select t::text from {} as t order by t.id").format(sql.Identifier(table))
    return [r[0] for r in conn.execute(statement).fetchall()]


def tx_row(conn: psycopg.Connection[Any], tx_id: Any) -> tuple[str, Any]:
    """(status, outcome) of a transaction, read as the superuser."""
    row = conn.execute(
        "select status, outcome from resilience.transactions where id = %s", (tx_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def claims_of(conn: psycopg.Connection[Any], tx_id: Any) -> int:
    row = conn.execute(
        "select count(*) from resilience._claims() where tx_id = %s", (tx_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def audit_events(conn: psycopg.Connection[Any], tx_id: Any) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select event from resilience.audit_log where tx_id = %s order by id", (tx_id,)
        ).fetchall()
    ]


def expire(conn: psycopg.Connection[Any], tx_id: Any) -> None:
    """Make a transaction expired now, without waiting for its timeout."""
    conn.execute(
        "update resilience.transactions set started_at = clock_timestamp() - interval '2 s',"
        " expires_at = clock_timestamp() - interval '1 s' where id = %s",
        (tx_id,),
    )


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def wait_until_waiting(
    observer: psycopg.Connection[Any], pid: int, event_type: str = "Lock"
) -> None:
    """Blocks until backend ``pid`` waits on a lock (deadline: a broken test
    fails instead of hanging; no timing is asserted)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = observer.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == event_type:
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on {event_type}")


def wait_until_gone(observer: psycopg.Connection[Any], pid: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            observer.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone()
            is None
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP backend ``pid`` for the block (SIGCONT on the way out, always)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


ITEMS_DDL = """
create table items (id integer primary key, v integer not null, note text);
insert into items select g, g * 10, 'n' || g from generate_series(1, 5) as g;
grant select, insert, update, delete on items to public;
select resilience.manage_table('items');
-- A restore (our undo sets resilience.restoring), or any write when
-- on_write is set, waits on the test's gate when the gate is armed: the
-- fault then strikes inside the undo (or the write).
create function gate_restore() returns trigger language plpgsql as $$
begin
    if exists (select from public.gate as g
        where g.armed and (g.on_write or current_setting('resilience.restoring', true) <> ''))
    then
        perform pg_advisory_xact_lock(%(key)s);
    end if;
    return coalesce(new, old);
end;
$$;
create table gate (armed boolean not null, on_write boolean not null default false);
insert into gate values (false);
grant select on gate to public;
create trigger gate_restore before insert or update or delete on items
    for each row execute function gate_restore();
"""


@pytest.fixture
def items(conn: psycopg.Connection[Any]) -> str:
    """Managed table ``items`` (ids 1..5) whose restores can be held at a gate."""
    conn.execute(ITEMS_DDL.replace("%(key)s", str(GATE_KEY)))
    return "items"


@contextmanager
def gate_closed(dsn: str, on_write: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """While open: restores of ``items`` (every write with ``on_write``) wait
    on the gate. Yields the connection holding it (an observer too); the gate
    opens on exit."""
    with psycopg.connect(dsn, autocommit=True) as keeper:
        keeper.execute("update gate set armed = true, on_write = %s", (on_write,))
        keeper.execute("select pg_advisory_lock(%s)", (GATE_KEY,))
        try:
            yield keeper
        finally:
            keeper.execute("select pg_advisory_unlock_all()")
            keeper.execute("update gate set armed = false, on_write = false")
