"""One manager behind PgBouncer in transaction mode: threads and asyncio
tasks at once on the same rows, and the server session behind the pooler
terminated mid-call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgbouncer import free_port, running_pgbouncer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    DatabaseError,
    TransactionManager,
)

from .conftest import ROWS, Holder, counters, make_counters, waiting_backend


@pytest.fixture
def bounced(dsn: str) -> Iterator[str]:
    """`dsn` through a PgBouncer in transaction mode."""
    params = conninfo_to_dict(dsn)
    port = free_port()

    def write(workdir: Path) -> None:
        (workdir / "users.txt").write_text(f'"{params["user"]}" ""\n')
        (workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={params['host']} port={params['port']}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
            "auth_type = trust\n"
            f"auth_file = {workdir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 4\nmax_client_conn = 100\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {workdir / 'pgbouncer.log'}\n"
            f"pidfile = {workdir / 'pgbouncer.pid'}\n"
            f"unix_socket_dir = {workdir}\n"
        )

    with running_pgbouncer(write, "127.0.0.1", port):
        yield make_conninfo(dsn, host="127.0.0.1", port=port)


def test_threads_and_tasks_share_one_manager_each_behind_the_pooler(bounced: str, dsn: str) -> None:
    """A sync manager shared by threads and an async manager shared by
    tasks, both through the pooler at once, on the same four rows: no
    increment is lost or doubled (the table holds exactly the committed
    ones), refusals are ClaimConflict only, and nothing is left active."""
    make_counters(dsn)
    committed = 0
    guard = threading.Lock()

    def sync_worker(seed: int) -> None:
        nonlocal committed
        for i in range(5):
            row = (seed + i) % ROWS + 1
            try:
                with shared.transaction(timeout=10) as tx:
                    [cur] = tx.lock("counters", {"id": row})
                    tx.update("counters", {"n": cur["n"] + 1}, match={"id": row})
                with guard:
                    committed += 1
            except ClaimConflict:
                pass

    async def tasks() -> int:
        async with AsyncTransactionManager(bounced, pool_size=4) as atm:

            async def one(seed: int) -> int:
                done = 0
                for i in range(4):
                    row = (seed + i) % ROWS + 1
                    try:
                        async with atm.transaction(timeout=10) as tx:
                            [cur] = await tx.lock("counters", {"id": row})
                            await tx.update("counters", {"n": cur["n"] + 1}, match={"id": row})
                        done += 1
                    except ClaimConflict:
                        pass
                return done

            return sum(await asyncio.gather(*(one(k) for k in range(8))))

    shared = TransactionManager(bounced, pool_size=3)
    threads = [threading.Thread(target=sync_worker, args=(k + 1,)) for k in range(4)]
    for t in threads:
        t.start()
    from_tasks = asyncio.run(tasks())
    for t in threads:
        t.join(60)
    shared.close()
    assert committed + from_tasks > 0
    assert sum(counters(dsn).values()) == committed + from_tasks
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute(
            "select count(*) from resilience.transactions where status = 'active'"
        ).fetchone() == (0,)


def test_server_session_terminated_behind_the_pooler(
    bounced: str, dsn: str, holders: list[Holder]
) -> None:
    """The server session serving an execute behind the pooler is
    terminated: the call returns an error with a SQLSTATE (DatabaseError),
    its statement is not kept, the logical transaction rolls back exactly,
    and the manager serves the next calls through the pooler."""
    make_counters(dsn)
    with TransactionManager(bounced, pool_size=2) as tm:
        tx = tm.begin(timeout=10)
        assert tm.execute(tx, "counters", "update", {"n": 1}, match={"id": 1}).success
        holders.append(Holder(dsn, "select * from counters where id = 2 for update"))
        box: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: box.update(
                r=tm.execute(tx, "counters", "update", {"n": 2}, match={"id": 2})
            )
        )
        thread.start()
        pid = waiting_backend(dsn, "%tx_execute%")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("select pg_terminate_backend(%s)", (pid,))
        thread.join(10)
        result = box["r"]
        assert not result.success  # type: ignore[attr-defined]
        assert isinstance(result.error, DatabaseError)  # type: ignore[attr-defined]
        holders[0].release()
        status = tm.status(tx)
        assert (status["status"], status["operations"]) == ("active", 1)
        assert tm.rollback(tx)["status"] == "rolled_back"
        with tm.transaction(timeout=5) as again:
            again.update("counters", {"n": 3}, match={"id": 3})
    assert counters(dsn) == {1: 0, 2: 0, 3: 3, 4: 0}
