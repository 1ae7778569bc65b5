"""Where the first DDL of a new session goes, piece by piece (backend CPU).

Every piece runs in its own new connection (what a migration tool running
one client process per file pays), as many times as --connections says;
printed: median [min-max] of the backend CPU (/proc/<pid>/schedstat) of
that piece alone, after a `select 1`:

* a CREATE TABLE, untracked / tracked with setting schema_diff_at_commit
  off (the diff at the first read) / tracked with the diff at commit (on,
  the default);
* PL/Python's interpreter start (`do language plpython3u 'pass'`), then the
  diff module's load and first call (`resilience._schema_diff('[]')`);
* per function of the commit path (track_functions = all): mean self time of
  each PL/pgSQL function during that first DDL, setting off.

The sessions of the pieces measured together take turns (one of each per
round, the order alternating), so a change of load shifts them alike.

Usage: python bench/ddl_first_profile.py [--connections N] [--preload-plpython]
(--preload-plpython: the embedded server preloads plpython3, so PL/Python's
interpreter starts in the postmaster, not in each session.)
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from pgresilience import installer

from _support import create_database, drop_database, server

PLAIN, DEFAULT, AT_COMMIT = "bench_first_plain", "bench_first_default", "bench_first_at_commit"
counter = itertools.count()


def cpu_ms(conn: psycopg.Connection[Any]) -> float:
    return int(Path(f"/proc/{conn.info.backend_pid}/schedstat").read_text().split()[0]) / 1e6


def prepare(admin_dsn: str, name: str, *, tracked: bool, at_commit: str = "off") -> str:
    dsn = create_database(admin_dsn, name)
    if tracked:
        assert installer.install(dsn).event_triggers, "needs a superuser (event triggers)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema first_ddl")
        if tracked:
            conn.execute(
                "update resilience.settings set value = %s where name = 'schema_diff_at_commit'",
                (at_commit,),
            )
    return dsn


def create_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"create table first_ddl.t{next(counter)} (id int)")  # type: ignore[arg-type]  # a generated name


def piece(
    dsn: str,
    step: Callable[[psycopg.Connection[Any]], object],
    connections: int,
    before: Callable[[psycopg.Connection[Any]], object] | None = None,
) -> list[float]:
    """Backend CPU (ms) of ``step`` in each of ``connections`` new sessions."""
    samples = []
    for _ in range(connections):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select 1")
            if before is not None:
                before(conn)
            start = cpu_ms(conn)
            step(conn)
            samples.append(cpu_ms(conn) - start)
    return samples


Step = Callable[[psycopg.Connection[Any]], object]


def interleaved(pieces: list[tuple[str, Step, Step | None]], connections: int) -> list[list[float]]:
    """``piece`` for each (dsn, step, before) in turns: one session of each
    per round, the order alternating."""
    samples: list[list[float]] = [[] for _ in pieces]
    for r in range(connections):
        order = list(range(len(pieces)))
        if r % 2:
            order.reverse()
        for i in order:
            dsn, step, before = pieces[i]
            samples[i] += piece(dsn, step, 1, before)
    return samples


def line(title: str, samples: list[float], base: float | None = None) -> None:
    median = statistics.median(samples)
    extra = "" if base is None else f" (+{median - base:.1f} over untracked)"
    print(f"  {title:58s} {median:6.1f} ms [{min(samples):.1f}-{max(samples):.1f}]{extra}")


def function_self_times(dsn: str, connections: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_stat_reset()")
    for _ in range(connections):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set track_functions = 'all'")
            create_table(conn)
    time.sleep(1.5)  # statistics reach the shared view within a second
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select funcname, self_time / calls, calls::float / %s from pg_stat_user_functions"
            " where calls > 0 order by self_time desc",
            (connections,),
        ).fetchall()
    print("per function of the first DDL, setting off (mean self time, calls per DDL):")
    for name, self_ms, calls in rows:
        print(f"  {name:40s} {self_ms * calls:6.2f} ms  ({calls:.0f} call(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=15)
    parser.add_argument("--preload-plpython", action="store_true")
    args = parser.parse_args()
    n = args.connections
    with server(preload=("plpython3",) if args.preload_plpython else ()) as admin_dsn:
        plain = prepare(admin_dsn, PLAIN, tracked=False)
        default = prepare(admin_dsn, DEFAULT, tracked=True)
        at_commit = prepare(admin_dsn, AT_COMMIT, tracked=True, at_commit="on")
        try:
            for dsn in (plain, default, at_commit):  # warm the server's caches
                piece(dsn, create_table, 2)
            untracked, off, on = interleaved(
                [(plain, create_table, None), (default, create_table, None),
                 (at_commit, create_table, None)],
                n,
            )  # fmt: skip
            base = statistics.median(untracked)
            print(f"first DDL of a new session, backend CPU, median [min-max] of {n} sessions:")
            line("CREATE TABLE, untracked", untracked)
            line("CREATE TABLE, tracked, setting off (diff at the first read)", off, base)
            line("CREATE TABLE, tracked, diff at commit (default)", on, base)
            print("what the diff at commit adds (each in a new session):")

            def start_plpython(conn: psycopg.Connection[Any]) -> object:
                return conn.execute("do language plpython3u 'pass'")

            def load_module(conn: psycopg.Connection[Any]) -> object:
                return conn.execute("select resilience._schema_diff('[]')")

            started, loaded = interleaved(
                [(default, start_plpython, None), (default, load_module, start_plpython)], n
            )
            line("PL/Python interpreter start (do language plpython3u)", started)
            line("diff module load + first call, PL/Python started", loaded)
            function_self_times(default, n)
        finally:
            for name in (PLAIN, DEFAULT, AT_COMMIT):
                drop_database(admin_dsn, name)


if __name__ == "__main__":
    main()
