"""One manager object for a whole web app behind PgBouncer in transaction mode
(README: "a transaction pooler is fine"): 32 threads, then a worker forked
after the pool opened, all writing through the pooler at once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from client.conftest import Bouncer
from client.conftest import bouncer as bouncer  # the session's PgBouncer

from .conftest import open_database_transactions, run_python

WORKERS = r"""
import json, os, sys
from concurrent.futures import ThreadPoolExecutor
from pgresilience import TransactionManager

tm = TransactionManager(sys.argv[1], pool_size=4)
tm.active_transactions()  # the pool opens before the fork, as with a preloading server
child = os.fork()
base = 10000 if child == 0 else 20000

def request(i):
    with tm.transaction(label=f"req {base + i}") as tx:
        tx.insert("orders", {"id": base + i, "total": i})
        tx.update("orders", {"total": i + 1}, match={"id": base + i})
    return i

with ThreadPoolExecutor(32) as pool:
    done = sorted(pool.map(request, range(96)))
tm.close()
if child == 0:
    os._exit(0 if done == list(range(96)) else 1)
_, status = os.waitpid(child, 0)
print(json.dumps({"parent_done": len(done), "child_exit": os.waitstatus_to_exitcode(status)}))
"""


def test_threads_and_a_forked_worker_share_one_manager_through_the_pooler(
    dsn: str, conn: psycopg.Connection[Any], bouncer: Bouncer
) -> None:
    conn.execute("create table orders (id int primary key, total int not null)")
    conn.execute("select resilience.manage_table('orders')")
    ran = run_python(WORKERS, bouncer.dsn(dsn))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"parent_done": 96, "child_exit": 0}
    rows = conn.execute("select count(*), sum(total - (id % 10000)) from orders").fetchone()
    assert rows == (192, 192)
    statuses = conn.execute(
        "select status, count(*) from resilience.transactions group by status"
    ).fetchall()
    assert statuses == [("committed", 192)]
    assert open_database_transactions(conn) == []


def test_an_apps_pool_of_non_autocommit_connections_through_the_pooler(
    dsn: str, conn: psycopg.Connection[Any], bouncer: Bouncer
) -> None:
    # the app's own psycopg_pool, with psycopg's defaults (not autocommit,
    # statements prepared after 5 uses): the manager borrows from it and must
    # never prepare one (PgBouncer 1.18 in transaction mode cannot keep them)
    from psycopg_pool import ConnectionPool

    from pgresilience import TransactionManager

    conn.execute("create table orders (id int primary key, total int not null)")
    conn.execute("select resilience.manage_table('orders')")
    with ConnectionPool(bouncer.dsn(dsn), min_size=2, max_size=4, open=True, timeout=60) as pool:
        tm = TransactionManager(pool)

        def request(i: int) -> None:
            with tm.transaction() as tx:
                tx.insert("orders", {"id": i, "total": i})
            with pool.connection() as own:  # the app's own reads, between calls
                own.execute("select count(*) from orders", prepare=False).fetchone()

        with ThreadPoolExecutor(32) as threads:
            list(threads.map(request, range(200)))
    assert conn.execute("select count(*) from orders").fetchone() == (200,)
    assert conn.execute(
        "select count(*) from resilience.transactions where status <> 'committed'"
    ).fetchone() == (0,)
    assert open_database_transactions(conn) == []
