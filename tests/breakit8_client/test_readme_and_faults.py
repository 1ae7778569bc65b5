"""README's Quickstart copied literally, constructors without I/O, and faults
under a running app: a backend killed mid-call, a worker process forked from
an app that used its manager, PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience import (
    AsyncSchemaVersionManager,
    AsyncTransactionManager,
    DatabaseError,
    SchemaVersionManager,
    TransactionManager,
)

from .conftest import other_backends

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(language: str, index: int = 0) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
    return blocks[index]


def test_quickstart_as_written(conn: psycopg.Connection[Any], dsn: str) -> None:
    """The Quickstart's SQL, then its Python, pasted as they are."""
    conn.execute(readme_block("sql"))
    script = readme_block("python")
    env = dict(os.environ, DATABASE_URL=dsn)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("claimed: 55P03 {"), lines
    assert "'holder'" in lines[0]
    assert lines[1].startswith("True [[{"), lines
    names = [r[0] for r in conn.execute("select name from users order by id")]
    assert names == ["John", "Jane"]  # "the name is John again"
    assert conn.execute("select count(*) from profiles").fetchone() == (2,)


def test_constructors_do_no_io() -> None:
    """Nothing listens on port 1: building (and entering, and closing) the
    managers must not notice; the first call does, with DatabaseError."""
    nowhere = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"
    with TransactionManager(nowhere) as tm:
        SchemaVersionManager(nowhere)
        with pytest.raises(DatabaseError):
            tm.begin()

    async def main() -> None:
        async with AsyncTransactionManager(nowhere) as atm:
            AsyncSchemaVersionManager(nowhere)
            with pytest.raises(DatabaseError):
                await atm.begin()

    # built outside any event loop, used inside one
    asyncio.run(main())


def test_backend_killed_mid_call(accounts: psycopg.Connection[Any], dsn: str) -> None:
    """pg_terminate_backend on the manager's session while a call waits on a
    row lock: the call fails (DatabaseError, never a hang, never success),
    ``transaction()`` rolls back on another connection of the pool, and the
    manager goes on."""
    with TransactionManager(dsn, pool_size=2) as tm, psycopg.connect(dsn) as locker:
        locker.execute("select 1 from accounts where id = 2 for update")
        tx_ids: list[str] = []

        def kill_when_waiting() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                waiting = accounts.execute(
                    "select pid from pg_stat_activity where wait_event_type = 'Lock'"
                    " and datname = current_database()"
                ).fetchall()
                if waiting:
                    accounts.execute("select pg_terminate_backend(%s)", (waiting[0][0],))
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_waiting)
        killer.start()
        with pytest.raises(DatabaseError) as raised:
            with tm.transaction(label="killed") as tx:
                tx_ids.append(tx.id)
                tx.update("accounts", {"balance": 1}, match={"id": 1})
                tx.update("accounts", {"balance": 1}, match={"id": 2})
        killer.join()
        locker.rollback()
        assert raised.value.sqlstate in ("57P01", None)
        assert tm.status(tx_ids[0])["status"] == "rolled_back"
        with tm.transaction() as tx:
            tx.update("accounts", {"balance": 9}, match={"id": 2})
    got = accounts.execute("select balance from accounts where id in (1, 2) order by id")
    assert got.fetchall() == [(100,), (9,)]


def _child(tm: TransactionManager, queue: Any) -> None:
    try:
        with tm.transaction(label="child") as tx:
            tx.update("accounts", {"balance": 2}, match={"id": 2})
        queue.put("ok")
    except BaseException as exc:  # reported to the parent
        queue.put(repr(exc))


def test_forked_worker_and_parent_keep_their_own_sessions(
    accounts: psycopg.Connection[Any], dsn: str
) -> None:
    """A pre-fork server: the parent used the manager, then forks a worker that
    uses it too, then the parent goes on: neither reads the other's replies."""
    with TransactionManager(dsn, pool_size=2) as tm:
        with tm.transaction(label="parent-1") as tx:
            tx.update("accounts", {"balance": 1}, match={"id": 1})
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=_child, args=(tm, queue))
        worker.start()
        assert queue.get(timeout=30) == "ok"
        worker.join(30)
        assert worker.exitcode == 0
        with tm.transaction(label="parent-2") as tx:
            tx.update("accounts", {"balance": 3}, match={"id": 3})
    got = dict(accounts.execute("select id, balance from accounts where id <= 3").fetchall())
    assert got == {1: 1, 2: 2, 3: 3}
    statuses = accounts.execute(
        "select label, status from resilience.transactions order by label"
    ).fetchall()
    assert statuses == [(label, "committed") for label in ("child", "parent-1", "parent-2")]


def test_through_pgbouncer_with_cancellations(
    accounts: psycopg.Connection[Any], dsn: str, bouncer: Any
) -> None:
    """README: the managers work through a transaction pooler. Many tasks,
    some cancelled by wait_for, through PgBouncer in transaction mode (4
    server connections): every finished transaction holds its own writes,
    and no transaction that wrote stays active."""
    pooled = bouncer.dsn(dsn)

    async def main() -> list[str]:
        async with AsyncTransactionManager(pooled, pool_size=6) as tm:

            async def body(i: int) -> None:
                async with tm.transaction(label=f"b{i}") as tx:
                    await tx.update("accounts", {"balance": 500 + i}, match={"id": i + 1})
                    await tx.savepoint("half")
                    await tx.update("accounts", {"owner": f"b{i}"}, match={"id": i + 1})

            async def task(i: int) -> str:
                try:
                    await asyncio.wait_for(body(i), 0.02 + (i % 7) * 0.02)
                    return "done"
                except TimeoutError:
                    return "cancelled"

            return await asyncio.gather(*(task(i) for i in range(24)))

    outcomes = asyncio.run(main())
    rows = dict(
        (r[0], (r[1], r[2])) for r in accounts.execute("select id, balance, owner from accounts")
    )
    for i, outcome in enumerate(outcomes):
        written = rows[i + 1] == (500 + i, f"b{i}")
        untouched = rows[i + 1] == (100, f"owner {i + 1}")
        assert written or untouched, rows[i + 1]
        if outcome == "done":
            assert written
    held = accounts.execute(
        "select t.label from resilience.transactions as t where t.status = 'active'"
        " and exists (select 1 from resilience.tx_statements as s where s.tx_id = t.id)"
    ).fetchall()
    assert held == []
    assert other_backends(accounts) is not None


def test_through_pgbouncer_after_its_server_sessions_were_killed(
    accounts: psycopg.Connection[Any], dsn: str, bouncer: Any
) -> None:
    """Every server session PgBouncer keeps is terminated while the manager's
    pool sits idle (a failover behind the pooler): the next calls still run,
    and a transaction begun before goes on."""
    with TransactionManager(bouncer.dsn(dsn), pool_size=3) as tm:
        tx = tm.begin(label="behind-bouncer")
        tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1}).unwrap()
        accounts.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and backend_type = 'client backend'"
        )
        for _ in range(4):  # every pooled connection, and then some
            assert tm.status(tx)["status"] == "active"
        result = tm.execute(tx, "accounts", "update", {"balance": 2}, {"id": 2})
        assert result.success, result.error
        tm.commit(tx)
    got = accounts.execute("select balance from accounts where id in (1, 2) order by id")
    assert got.fetchall() == [(1,), (2,)]
