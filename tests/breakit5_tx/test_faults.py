"""Faults in the middle of a lifecycle call: the backend terminated
(pg_terminate_backend) or killed (SIGKILL: the whole server goes through crash
recovery), the server stopped with ``pg_ctl stop -m immediate``, a backend
frozen (SIGSTOP). Each call is one database transaction, so a fault leaves
the logical transaction exactly as before the call: status, rows, claims,
journal, savepoints and audit rows unchanged, no restore token left behind,
and the interrupted call (or a later tx_reap) then completes. Nothing stuck.

Every fault strikes at a known point: the call waits at the test's gate
(conftest), inside its undo or its write."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres
from pgresilience.transactions.janitor import Janitor

from .conftest import (
    GATE_KEY,
    ITEMS_DDL,
    audit_events,
    backend_pid,
    call,
    claims_of,
    expire,
    frozen,
    gate_closed,
    rows_text,
    sqlstate_of,
    tx_row,
    wait_until_gone,
    wait_until_waiting,
)

FIRST = ["(1,10,n1)", "(2,20,n2)", "(3,30,n3)", "(4,40,n4)", "(5,50,n5)"]
CHANGED = ["(1,1,n1)", "(2,2,n2)", "(3,30,n3)", "(4,40,n4)", "(5,50,n5)"]


def _two_writes(conn: psycopg.Connection[Any]) -> Any:
    tx = call(conn, "tx_begin", 600000)
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    call(conn, "tx_savepoint", tx, "s")
    call(conn, "tx_execute", tx, "items", "update", {"v": 2}, {"id": 2})
    return tx


def _snapshot(conn: psycopg.Connection[Any], tx: Any) -> tuple[Any, ...]:
    """Everything a call may change: rows, status, claims, journal, savepoints, audit."""
    journal = conn.execute(
        "select count(*) from resilience.tx_statements where tx_id = %s", (tx,)
    ).fetchone()
    savepoints = conn.execute(
        "select array_agg(name order by seq) from resilience.savepoints where tx_id = %s", (tx,)
    ).fetchone()
    tokens = conn.execute("select count(*) from resilience.restore_tokens").fetchone()
    return (
        rows_text(conn, "items"),
        tx_row(conn, tx)[0],
        claims_of(conn, tx),
        journal,
        savepoints,
        audit_events(conn, tx),
        tokens,
    )


def _strike_inside(
    dsn: str,
    action: Callable[[psycopg.Connection[Any]], Any],
    strike: Callable[[psycopg.Connection[Any], int], None],
    on_write: bool = False,
) -> BaseException | None:
    """Runs ``action`` on its own connection until it waits at the gate, then
    ``strike(observer, pid)``; returns what the action raised."""
    raised: dict[str, BaseException] = {}
    victim = psycopg.connect(dsn, autocommit=True)
    pid = backend_pid(victim)

    def run() -> None:
        try:
            action(victim)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            raised["error"] = error

    try:
        with gate_closed(dsn, on_write=on_write) as keeper:
            worker = threading.Thread(target=run)
            worker.start()
            wait_until_waiting(keeper, pid)
            strike(keeper, pid)
            if keeper.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone():
                keeper.execute("select pg_advisory_unlock(%s)", (GATE_KEY,))
            worker.join(60)
    finally:
        victim.close()
    return raised.get("error")


def _terminate(observer: psycopg.Connection[Any], pid: int) -> None:
    observer.execute("select pg_terminate_backend(%s)", (pid,))
    wait_until_gone(observer, pid)


@pytest.mark.parametrize(
    "action",
    [
        lambda c, tx: call(c, "tx_rollback", tx),
        lambda c, tx: call(c, "tx_rollback_to", tx, "s"),
    ],
    ids=["tx_rollback", "tx_rollback_to"],
)
def test_backend_terminated_inside_an_undo_leaves_the_transaction_as_it_was(
    conn: psycopg.Connection[Any], dsn: str, items: str, action: Any
) -> None:
    tx = _two_writes(conn)
    before = _snapshot(conn, tx)
    error = _strike_inside(dsn, lambda c: action(c, tx), _terminate)
    assert isinstance(error, psycopg.OperationalError)
    assert _snapshot(conn, tx) == before
    action(conn, tx)  # the same call now completes
    if tx_row(conn, tx)[0] == "active":  # rollback_to: the part after "s" is undone
        assert rows_text(conn, items) == ["(1,1,n1)", *FIRST[1:]]
        call(conn, "tx_rollback", tx)
    assert rows_text(conn, items) == FIRST
    assert claims_of(conn, tx) == 0


def test_backend_terminated_inside_a_reap_leaves_it_to_the_next_reap(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    expire(conn, tx)
    before = _snapshot(conn, tx)
    error = _strike_inside(dsn, lambda c: call(c, "tx_reap"), _terminate)
    assert isinstance(error, psycopg.OperationalError)
    assert _snapshot(conn, tx) == before
    assert call(conn, "tx_reap") == 1
    assert tx_row(conn, tx)[0] == "timed_out"
    assert rows_text(conn, items) == FIRST
    assert claims_of(conn, tx) == 0
    assert audit_events(conn, tx)[-1] == "timeout"


def test_backend_terminated_inside_a_captured_write_leaves_no_trace(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = _two_writes(conn)
    before = _snapshot(conn, tx)
    error = _strike_inside(
        dsn,
        lambda c: call(c, "tx_execute", tx, "items", "update", {"v": 3}, {"id": 3}),
        _terminate,
        on_write=True,
    )
    assert isinstance(error, psycopg.OperationalError)
    assert _snapshot(conn, tx) == before
    # Row 3 was never claimed: anyone may write it, and the transaction goes on.
    assert conn.execute("update items set v = 33 where id = 3").rowcount == 1
    assert call(conn, "tx_commit", tx)["operations"] == 2
    assert rows_text(conn, items) == ["(1,1,n1)", "(2,2,n2)", "(3,33,n3)", *FIRST[3:]]
    assert claims_of(conn, tx) == 0


def test_frozen_rollback_makes_nobody_wait_on_a_claim(
    conn: psycopg.Connection[Any], dsn: str, items: str, make_role: Any
) -> None:
    tx = _two_writes(conn)
    other = psycopg.connect(make_role("b5_other", member_of=("resilience_user",)), autocommit=True)
    results: dict[str, Any] = {}
    with other, gate_closed(dsn) as keeper:
        with psycopg.connect(dsn, autocommit=True) as rolling:
            pid = backend_pid(rolling)
            worker = threading.Thread(
                target=lambda: results.setdefault("done", call(rolling, "tx_rollback", tx))
            )
            worker.start()
            wait_until_waiting(keeper, pid)
            with frozen(pid):
                # Row 1 is not restored yet and still claimed: 55P03 at once.
                assert sqlstate_of(other.execute, "update items set v = 0 where id = 1") == "55P03"
                theirs = call(other, "tx_begin")  # a lazy reap skips it
                assert (
                    call(other, "tx_execute", theirs, "items", "update", {"v": 4}, {"id": 4})[
                        "count"
                    ]
                    == 1
                )
                assert call(other, "tx_reap") == 0
                keeper.execute("select pg_advisory_unlock(%s)", (GATE_KEY,))
            worker.join(60)
        call(other, "tx_commit", theirs)
    assert results["done"]["status"] == "rolled_back"
    assert rows_text(conn, items) == [*FIRST[:3], "(4,4,n4)", FIRST[4]]


def test_janitor_outlives_its_backend_being_terminated(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    with Janitor(dsn, interval=0.05) as janitor:
        deadline = time.monotonic() + 60
        while (
            janitor.reaped == 0
            and not conn.execute(
                "select 1 from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid()"
            ).fetchone()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        )
        tx = _two_writes(conn)
        expire(conn, tx)
        while tx_row(conn, tx)[0] == "active":
            assert time.monotonic() < deadline, "the janitor never reaped again"
            time.sleep(0.02)
    assert tx_row(conn, tx)[0] == "timed_out"
    assert rows_text(conn, items) == FIRST


# Crash tests: a server of their own (a SIGKILLed backend restarts every
# backend of its server; an immediate shutdown stops it).


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database b5_template template template0")
        installer.install(pg.dsn("b5_template"))
        yield pg


@pytest.fixture
def own_dsn(own_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"b5_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(own_server.dsn(), autocommit=True) as admin:
        # FILE_COPY: with WAL_LOG (15's default), a sequence copied from the
        # template went back after crash recovery (audit ids reused, 23505).
        # PostgreSQL 14 has no STRATEGY: it always copies files.
        file_copy = admin.info.server_version >= 150000
        admin.execute(
            sql.SQL("create database {} template b5_template{}").format(
                sql.Identifier(name), sql.SQL(" strategy file_copy" if file_copy else "")
            )
        )
    dsn = own_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(ITEMS_DDL.replace("%(key)s", str(GATE_KEY)))
    yield dsn
    _wait_for(own_server.dsn())
    with psycopg.connect(own_server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def _wait_for(dsn: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5) as c:
                c.execute("select 1")
                return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.2)


def _after_crash_the_rollback_completes(dsn: str, tx: Any, before: tuple[Any, ...]) -> None:
    _wait_for(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _snapshot(conn, tx) == before
        done = call(conn, "tx_rollback", tx)
        assert (done["status"], done["restored_rows"]) == ("rolled_back", 2)
        assert rows_text(conn, "items") == FIRST
        assert claims_of(conn, tx) == 0
        assert audit_events(conn, tx)[-1] == "rollback"


def test_backend_sigkilled_inside_a_rollback_loses_nothing(own_dsn: str) -> None:
    with psycopg.connect(own_dsn, autocommit=True) as conn:
        tx = _two_writes(conn)
        before = _snapshot(conn, tx)

    def kill(observer: psycopg.Connection[Any], pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        # Until the postmaster's crash reset has ended the observer too: a
        # connection made before it would be cut by it (seen on a loaded
        # machine, the reset a little after _wait_for had connected).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            observer.execute("select 1")
            time.sleep(0.05)

    try:
        _strike_inside(own_dsn, lambda c: call(c, "tx_rollback", tx), kill)
    except psycopg.OperationalError:
        pass  # the keeper's own connection went down with the crash
    _after_crash_the_rollback_completes(own_dsn, tx, before)


def test_immediate_shutdown_inside_a_rollback_loses_nothing(
    own_server: EmbeddedPostgres, own_dsn: str
) -> None:
    with psycopg.connect(own_dsn, autocommit=True) as conn:
        tx = _two_writes(conn)
        before = _snapshot(conn, tx)

    def shutdown(observer: psycopg.Connection[Any], pid: int) -> None:
        own_server.crash()
        own_server.restart()

    try:
        _strike_inside(own_dsn, lambda c: call(c, "tx_rollback", tx), shutdown)
    except psycopg.OperationalError:
        pass  # the keeper's own connection went down with the server
    _after_crash_the_rollback_completes(own_dsn, tx, before)
