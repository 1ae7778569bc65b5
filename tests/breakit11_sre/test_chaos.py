"""Chaos: threads of one manager increment shared rows while another
session terminates the manager's backends at random. Every increment is a
logical transaction (lock, read, write +1, commit) labelled `chaos`."""

from __future__ import annotations

import random
import threading
import time

import psycopg

from pgresilience import PgResilienceError, TransactionManager

from .conftest import ROWS, counters, make_counters

THREADS = 4
SECONDS = 1.5


def test_terminated_backends_never_half_commit_an_increment(dsn: str) -> None:
    """Whatever call the terminations hit (begin, lock, update, commit,
    rollback), the table holds exactly one increment per logical
    transaction the database says committed: none half-done, none lost, no
    two committed on one value (claims), and once the chaos stops every
    transaction left active rolls back exactly. Calls fail only with the
    package's exceptions, and the manager serves calls afterwards."""
    make_counters(dsn)
    rng = random.Random(1105)
    stop = threading.Event()
    errors: list[BaseException] = []
    tm = TransactionManager(dsn, pool_size=THREADS)

    def worker(seed: int) -> None:
        local = random.Random(seed)
        while not stop.is_set():
            row = local.randint(1, ROWS)
            try:
                with tm.transaction(timeout=20, label="chaos") as tx:
                    [cur] = tx.lock("counters", {"id": row})
                    tx.update("counters", {"n": cur["n"] + 1}, match={"id": row})
            except PgResilienceError:
                pass
            except BaseException as exc:
                errors.append(exc)
                return

    def chaos() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                pids = [
                    r[0]
                    for r in c.execute(
                        "select pid from pg_stat_activity where datname = current_database()"
                        " and backend_type = 'client backend' and pid <> pg_backend_pid()"
                    )
                ]
                if pids:
                    c.execute("select pg_terminate_backend(%s)", (rng.choice(pids),))
                time.sleep(rng.uniform(0.005, 0.05))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    threads.append(threading.Thread(target=chaos))
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            left = [
                r[0]
                for r in c.execute(
                    "select id from resilience.transactions"
                    " where label = 'chaos' and status = 'active'"
                )
            ]
        for tx in left:  # a rollback the chaos cut: finished now
            tm.rollback(tx)
        with psycopg.connect(dsn, autocommit=True) as c:
            statuses = dict(
                c.execute(
                    "select status, count(*) from resilience.transactions"
                    " where label = 'chaos' group by status"
                ).fetchall()
            )
        assert statuses.get("committed", 0) > 0
        assert set(statuses) <= {"committed", "rolled_back"}
        assert sum(counters(dsn).values()) == statuses["committed"]
        with tm.transaction(timeout=5) as tx:
            tx.update("counters", {"n": 0}, match={"id": 1})
    finally:
        tm.close()
