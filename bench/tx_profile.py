"""Where the time of a logical-transaction call goes: per function of the
package (pg_stat_user_functions with track_functions = all), the calls,
total and self time per measured operation, heaviest self time first.

Operations (4-column table: id bigint pk, grp int, v int, note text):
tx_execute single-row insert; the same INSERT in PostgREST header mode;
tx_execute lock of one row; a single-row UPDATE outside any logical
transaction while --claims claims are held on other rows (the claim guard);
a --rows-row UPDATE in header mode and its rollback. Before them, --history
logical transactions are begun and committed (an application's table of
transactions is rarely empty: finished ones stay until their retention
ends), then VACUUM (ANALYZE): the planner then knows the tables' sizes.
Each operation runs in a session of its own, as on a pooled connection
that serves only it (what a session ran first can change what its plans
cost later).

Usage: python bench/tx_profile.py [--calls N] [--rows N] [--claims N] [--history N]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from _support import backend_cpu_ns
from tx_overhead import create, database, postgrest, tx_begin


def profile(conn: psycopg.Connection[Any], label: str, calls: int, fn: Callable[[], None]) -> None:
    conn.execute("select pg_stat_force_next_flush()")  # what came before, then reset
    conn.execute("select 1")
    conn.execute("select pg_stat_reset()")
    conn.execute("select pg_stat_clear_snapshot()")
    pid = conn.info.backend_pid
    cpu0 = backend_cpu_ns(pid)
    started = time.perf_counter()
    fn()
    wall = time.perf_counter() - started
    cpu = (backend_cpu_ns(pid) - cpu0) / 1e9
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select 1")  # the flush happens at the end of a transaction
    conn.execute("select pg_stat_clear_snapshot()")
    rows = conn.execute(
        "select schemaname || '.' || funcname, calls, total_time, self_time"
        " from pg_stat_user_functions order by self_time desc limit 12"
    ).fetchall()
    print(
        f"\n{label}: {calls} call(s), per call: wall {wall / calls * 1e3:.3f} ms,"
        f" backend cpu {cpu / calls * 1e3:.3f} ms"
    )
    print(f"  {'function':<44} {'calls/op':>8} {'total ms/op':>11} {'self ms/op':>10}")
    for name, fcalls, total, self_time in rows:
        print(f"  {name:<44} {fcalls / calls:8.2f} {total / calls:11.3f} {self_time / calls:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--claims", type=int, default=10_000, help="claims held during the guard's updates"
    )
    parser.add_argument(
        "--history", type=int, default=30, help="finished logical transactions before profiling"
    )
    args = parser.parse_args()
    n = args.calls
    shape = "4 columns"
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as setup:
        create(setup, "p_ins", shape)
        create(setup, "p_lock", shape, rows=n)
        create(setup, "p_guard", shape, rows=n + args.claims)
        create(setup, "p_up", shape, rows=args.rows)
        for t in ("p_ins", "p_lock", "p_guard", "p_up"):
            setup.execute("select resilience.manage_table(%s)", (t,))
        for _ in range(args.history):
            setup.execute("select resilience.tx_commit(%s)", (tx_begin(setup),))
        setup.execute("vacuum (analyze)")
        keys = itertools.count(1)
        tx = tx_begin(setup)

        def session() -> psycopg.Connection[Any]:
            conn = psycopg.connect(dsn, autocommit=True)
            conn.execute("set track_functions = 'all'")
            return conn

        def insert(conn: psycopg.Connection[Any]) -> None:
            for _ in range(n):
                k = next(keys)
                row = {"id": k, "grp": 1, "v": 0, "note": f"row {k}"}
                conn.execute(
                    "select resilience.tx_execute(%s, 'p_ins', 'insert', %s)", (tx, Jsonb(row))
                )

        def header_insert(conn: psycopg.Connection[Any]) -> None:
            header = {"x-resilience-tx": str(tx)}
            for _ in range(n):
                k = next(keys)
                postgrest(
                    conn,
                    header,
                    "insert into p_ins (id, grp, v, note) values (%s, 1, 0, %s)",
                    (k, f"row {k}"),
                )

        def lock(conn: psycopg.Connection[Any]) -> None:
            for i in range(1, n + 1):
                conn.execute(
                    "select resilience.tx_execute(%s, 'p_lock', 'lock', match => %s)",
                    (tx, Jsonb({"id": i})),
                )

        for label, operation in (
            ("tx_execute insert", insert),
            ("PostgREST header-mode INSERT", header_insert),
            ("tx_execute lock", lock),
        ):
            with session() as conn:
                profile(conn, label, n, functools.partial(operation, conn))
        setup.execute("select resilience.tx_commit(%s)", (tx,))
        holder = tx_begin(setup)  # claims rows n+1.., never written below
        postgrest(
            setup,
            {"x-resilience-tx": str(holder)},
            "update p_guard set v = -1 where id > %s",
            (n,),
        )
        with session() as conn:

            def guard() -> None:
                for i in range(1, n + 1):
                    conn.execute("update p_guard set v = v + 1 where id = %s", (i,))

            profile(
                conn,
                f"claim guard: single-row UPDATE, {args.claims:,} claims held on other rows",
                n,
                guard,
            )
        setup.execute("select resilience.tx_rollback(%s)", (holder,))
        with session() as conn:
            big = tx_begin(conn)
            header = {"x-resilience-tx": str(big)}
            profile(
                conn,
                f"{args.rows:,}-row UPDATE in header mode",
                1,
                lambda: postgrest(conn, header, "update p_up set v = v + 1 where grp = 1", ()),
            )
            profile(
                conn,
                f"rollback of the {args.rows:,}-row UPDATE",
                1,
                lambda: conn.execute("select resilience.tx_rollback(%s)", (big,)),
            )
        print(json.dumps({"note": "times from pg_stat_user_functions, ms per operation"}))


if __name__ == "__main__":
    main()
