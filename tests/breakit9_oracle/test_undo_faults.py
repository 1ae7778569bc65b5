"""A rollback interrupted half way (its backend terminated, the caller's
statement_timeout, a row lock another session holds) restores nothing: the
rows stay as they were before the attempt, the transaction stays active with
its claims, and the next attempt restores everything, as a real ROLLBACK
would have left it."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

SCHEMA = """
create table slow (id int primary key, v text);
create table fast (id int primary key, v numeric);
insert into slow values (1, 'one'), (2, 'two');
insert into fast values (1, 1.50), (2, 'NaN');
-- Sleeps while a restore runs, when the session asks for it: an undo that
-- takes long enough to be interrupted.
create function public.slow_restore() returns trigger language plpgsql as $$
begin
    if current_setting('resilience.restoring', true) <> ''
        and current_setting('test.sleep_ms', true) <> '' then
        perform pg_catalog.pg_sleep(current_setting('test.sleep_ms')::int / 1000.0);
    end if;
    return new;
end $$;
create trigger slow_restore before update or insert on slow
    for each row execute function public.slow_restore();
select resilience.manage_table('slow');
select resilience.manage_table('fast');
"""


def state(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select 'slow' || s::text from slow s union all select 'fast' || f::text from fast f"
            " order by 1"
        )
    ]


@pytest.fixture
def written(conn: psycopg.Connection[Any]) -> tuple[str, list[str], list[str]]:
    """A transaction that wrote both tables: (its id, the rows before it,
    the rows after it)."""
    conn.execute(SCHEMA)
    before = state(conn)
    tx = str(conn.execute("select resilience.tx_begin(120000)").fetchone()[0])  # type: ignore[index]
    for statement in (
        "select resilience.tx_execute(%s, 'fast', 'update', '{\"v\": \"-0\"}', '{\"id\": 1}')",
        "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": \"1\"}', '{\"id\": 1}')",
        "select resilience.tx_execute(%s, 'fast', 'delete', null, '{\"id\": 2}')",
        "select resilience.tx_execute(%s, 'slow', 'delete', null, '{\"id\": 2}')",
        "select resilience.tx_execute(%s, 'fast', 'insert', '{\"id\": 3, \"v\": 3}')",
    ):
        conn.execute(statement, (tx,))
    return tx, before, state(conn)


def assert_untouched_then_retry(
    conn: psycopg.Connection[Any], tx: str, before: list[str], after: list[str]
) -> None:
    assert state(conn) == after
    status = conn.execute("select resilience.tx_status(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert status["status"] == "active"
    with pytest.raises(psycopg.errors.LockNotAvailable):
        conn.execute("update fast set v = 0 where id = 1")
    conn.execute("reset test.sleep_ms")
    result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert result["success"] is True
    assert state(conn) == before


def test_a_rollback_whose_backend_is_terminated_restores_nothing_and_can_be_retried(
    conn: psycopg.Connection[Any], dsn: str, written: tuple[str, list[str], list[str]]
) -> None:
    tx, before, after = written
    victim = psycopg.connect(dsn, autocommit=True)
    pid = victim.info.backend_pid
    victim.execute("set test.sleep_ms = 30000")
    failures: list[BaseException] = []

    def roll_back() -> None:
        try:
            victim.execute("select resilience.tx_rollback(%s)", (tx,))
        except BaseException as e:  # noqa: BLE001 - the expected outcome
            failures.append(e)

    thread = threading.Thread(target=roll_back)
    thread.start()
    # Terminate it once its undo is asleep inside the restore.
    for _ in range(600):
        waiting = conn.execute(
            "select wait_event = 'PgSleep' from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if waiting and waiting[0]:
            break
        time.sleep(0.05)
    conn.execute("select pg_terminate_backend(%s)", (pid,))
    thread.join(60)
    victim.close()
    assert failures and isinstance(failures[0], psycopg.OperationalError)
    assert_untouched_then_retry(conn, tx, before, after)


def test_a_rollback_cut_by_statement_timeout_restores_nothing_and_can_be_retried(
    conn: psycopg.Connection[Any], written: tuple[str, list[str], list[str]]
) -> None:
    tx, before, after = written
    conn.execute("set test.sleep_ms = 5000")
    conn.execute("set statement_timeout = 300")
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    conn.execute("reset statement_timeout")
    assert_untouched_then_retry(conn, tx, before, after)


def test_a_rollback_meeting_a_held_row_lock_fails_with_55p03_not_rz005_and_can_be_retried(
    conn: psycopg.Connection[Any], dsn: str, written: tuple[str, list[str], list[str]]
) -> None:
    tx, before, after = written
    with psycopg.connect(dsn) as holder:
        # Reading with FOR SHARE is no write: a claimed row allows it.
        holder.execute("select * from slow where id = 1 for share")
        conn.execute("set lock_timeout = 200")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("select resilience.tx_rollback(%s)", (tx,))
        conn.execute("reset lock_timeout")
        holder.rollback()
    assert_untouched_then_retry(conn, tx, before, after)
