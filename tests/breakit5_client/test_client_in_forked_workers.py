"""One manager object created at import time and used before a server forks its
workers (gunicorn --preload, multiprocessing with 'fork'): every process must
get its own sessions. The parent's pool is opened before the fork, so the
child inherits its connections: sockets shared with the parent."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from .conftest import run_python

# Parent and child write concurrently through the same manager object, then the
# child closes the manager (a worker's shutdown). Prints one JSON line.
FORKED_WORKER = r"""
import json, os, sys
import psycopg
import pytest
from pgresilience import TransactionManager

dsn = sys.argv[1]
tm = TransactionManager(dsn, pool_size=1)
tm.active_transactions()  # the pool is open in the parent: one session

def parents_sessions():
    with psycopg.connect(dsn, autocommit=True) as c:
        return sorted(r[0] for r in c.execute(
            "select pid from pg_stat_activity where application_name = 'bk5_forked'"
            " and pid <> pg_backend_pid()"))

import time
for _ in range(100):  # the closed probe connection may linger an instant
    before = parents_sessions()
    if len(before) == 1:
        break
    time.sleep(0.1)
child = os.fork()
who, base = ("child", 0) if child == 0 else ("parent", 100000)
errors = []
for i in range(150):
    try:
        with tm.transaction() as tx:
            tx.insert("forked", {"id": base + i, "who": who})
    except Exception as error:
        errors.append(repr(error))
if child == 0:
    tm.close()
    os._exit(1 if errors else 0)
_, status = os.waitpid(child, 0)
after = parents_sessions()
tm.active_transactions()
print(json.dumps({"parent_errors": errors[:3], "child_exit": os.waitstatus_to_exitcode(status),
                  "parent_session_kept": set(before) <= set(after), "before": before}))
tm.close()
"""


def _rows_by_writer(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("select who, count(*) from forked group by who order by who").fetchall()
    return {who: count for who, count in rows}


def test_one_manager_used_before_a_fork_gives_each_process_its_own_sessions(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("create table forked (id int primary key, who text not null)")
    conn.execute("select resilience.manage_table('forked')")
    ran = run_python(FORKED_WORKER, dsn + " application_name=bk5_forked")
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["parent_errors"] == []
    assert report["child_exit"] == 0
    assert len(report["before"]) == 1
    assert report["parent_session_kept"], "the child's close() ended the parent's session"
    assert _rows_by_writer(conn) == {"child": 150, "parent": 150}
    assert conn.execute(
        "select count(*) from resilience.transactions where status <> 'committed'"
    ).fetchone() == (0,)


# A worker forked after the schema manager started listening: its cache must
# still be cleared by a new version, and its callbacks called.
FORKED_SCHEMA_WATCHER = r"""
import json, os, sys, time
import psycopg
import pytest
from pgresilience import SchemaVersionManager

dsn = sys.argv[1]
svm = SchemaVersionManager(dsn)
svm.initialize()
seen = []
svm.on_schema_change(lambda changes: seen.append(changes.version))
assert svm.wait_listening(30)
svm.cache.get_or_compute("columns", lambda: "before the migration")
child = os.fork()
if child == 0:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table made_in_the_worker (id int primary key)")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.1)
    cached = svm.cache.get_or_compute("columns", lambda: "after the migration")
    print(json.dumps({"seen": seen, "cached": cached}), flush=True)
    os._exit(0)
os.waitpid(child, 0)
svm.close()
"""


def test_a_schema_manager_listening_before_a_fork_keeps_the_workers_cache_fresh(
    dsn: str,
) -> None:
    ran = run_python(FORKED_SCHEMA_WATCHER, dsn)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert len(report["seen"]) == 1
    assert report["cached"] == "after the migration"
