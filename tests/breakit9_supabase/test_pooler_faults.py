"""Faults behind the transaction pooler: server connections the pooler holds
are terminated (a Supabase restart, a pooler failover), idle or in the
middle of a call."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgresilience import TransactionManager

from .conftest import running_pooler
from .supa import table_rows

LEDGER = """
create table ledger (id int primary key, n int not null);
insert into ledger values (1, 0);
select resilience.manage_table('ledger');
"""

OWNER_BACKENDS = """
select pg_terminate_backend(pid) from pg_stat_activity
where usename = 'supa_postgres' and datname = current_database() and pid <> pg_backend_pid()
"""


def test_calls_go_on_after_the_servers_connections_behind_the_pooler_died_idle(
    project: str, owner_dsn: str, pooler: Any
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    before = table_rows(project, "ledger")
    with TransactionManager(pooler.dsn(owner_dsn), pool_size=2) as tm:
        tx = tm.begin()
        tm.execute(tx, "ledger", "update", {"n": 1}, match={"id": 1})
        with psycopg.connect(project, autocommit=True) as admin:
            assert admin.execute(OWNER_BACKENDS).fetchall()
        # The pooler hands out new server connections (or closes the client
        # connection, which then fails at BEGIN and the call runs on another).
        assert tm.status(tx)["rows"] == 1
        assert tm.execute(tx, "ledger", "update", {"n": 2}, match={"id": 1}).count == 1
        assert tm.rollback(tx)["status"] == "rolled_back"
    assert table_rows(project, "ledger") == before


@pytest.mark.timeout(60)
def test_a_call_whose_server_connection_is_killed_mid_statement_changes_nothing(
    project: str, owner_dsn: str, pooler: Any
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    before = table_rows(project, "ledger")
    with TransactionManager(pooler.dsn(owner_dsn), pool_size=2) as tm:
        tx = tm.begin()
        outcome: list[BaseException | object] = []
        with psycopg.connect(project) as blocker:  # a plain transaction holds the row
            blocker.execute("select * from ledger where id = 1 for update")

            def call() -> None:
                try:
                    outcome.append(tm.execute(tx, "ledger", "update", {"n": 5}, match={"id": 1}))
                except BaseException as error:
                    outcome.append(error)

            caller = threading.Thread(target=call)
            caller.start()
            with psycopg.connect(project, autocommit=True) as admin:
                waiting = "select pid from pg_stat_activity where wait_event_type = 'Lock'"
                deadline = time.monotonic() + 20
                pids: list[Any] = []
                while not pids and time.monotonic() < deadline:
                    pids = admin.execute(waiting + " and usename = 'supa_postgres'").fetchall()
                    time.sleep(0.05)
                assert pids
                admin.execute("select pg_terminate_backend(%s)", (pids[0][0],))
            caller.join(20)
            blocker.rollback()
        assert len(outcome) == 1
        assert not outcome[0].success  # type: ignore[union-attr]
        status = tm.status(tx)
        assert (status["status"], status["rows"]) == ("active", 0)
        assert tm.execute(tx, "ledger", "update", {"n": 6}, match={"id": 1}).count == 1
        assert tm.rollback(tx)["restored_rows"] == 1
    assert table_rows(project, "ledger") == before


def test_calls_go_on_after_the_pooler_restarted(server: Any, project: str, owner_dsn: str) -> None:
    """A pooler restart (a Supavisor deploy) closes every client connection:
    each of the manager's fails at BEGIN and the call runs on a new one."""
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    before = table_rows(project, "ledger")
    with running_pooler(server) as first:
        port = first.port
        tm = TransactionManager(first.dsn(owner_dsn), pool_size=3)
        tx = tm.begin()
        tm.execute(tx, "ledger", "update", {"n": 1}, match={"id": 1})
    try:
        with running_pooler(server, port) as again:
            assert again.port == port
            assert tm.status(tx)["rows"] == 1
            assert tm.rollback(tx)["status"] == "rolled_back"
    finally:
        tm.close()
    assert table_rows(project, "ledger") == before


def test_the_apps_own_pool_through_the_pooler_survives_a_restart_of_it(
    server: Any, project: str, owner_dsn: str
) -> None:
    """The app's psycopg_pool pool, with psycopg's defaults (statements
    prepared after 5 runs): the manager prepares nothing, and after a pooler
    restart every dead connection of the pool is skipped."""
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    before = table_rows(project, "ledger")
    with running_pooler(server) as first:
        port = first.port
        pool = ConnectionPool(first.dsn(owner_dsn), min_size=3, max_size=3, open=True)
        pool.wait(10)
        tm = TransactionManager(pool)
        for n in range(12):  # the same statements, again and again
            tx = tm.begin()
            tm.execute(tx, "ledger", "update", {"n": n}, match={"id": 1})
            tm.commit(tx)
        tx = tm.begin()
        tm.execute(tx, "ledger", "update", {"n": 100}, match={"id": 1})
    try:
        with running_pooler(server, port):
            assert tm.status(tx)["rows"] == 1
            assert tm.rollback(tx)["status"] == "rolled_back"
    finally:
        tm.close()
        pool.close()
    assert table_rows(project, "ledger") == [row.replace(",0)", ",11)") for row in before]
