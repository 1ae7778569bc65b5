"""Memory and scale (issue 11 item 4): a 1,000,000-row UPDATE inside a
logical transaction (PostgREST header mode: the plain UPDATE, captured by
the trigger) and its rollback, with the same UPDATE on an unmanaged table
for comparison; times and the server's peak memory.

Each operation runs on a fresh connection, so that its backend's peak
resident memory (VmHWM in /proc/<pid>/status) is that of the operation
alone. VmHWM counts the shared buffers the backend touched (up to
shared_buffers, 256 MB on the embedded server); a sampler therefore also
records, every 20 ms, the backend's private memory (RssAnon) and the
server's memory: RssAnon summed over the postmaster and all its children,
plus the largest RssShmem among them (shared memory is mapped by every
process; counting it once). Sampled, so a peak shorter than 20 ms can be
missed; the backend's VmHWM is exact. Table: id bigint pk, grp int, v int,
note text.

The rollback is checked against a copy of the table taken before the
UPDATE: every row, compared as row::text both ways (EXCEPT ALL); any
difference is printed and the command exits 1.

Usage: python bench/tx_scale.py [--rows N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from _support import backend_cpu_ns, backend_peak_rss_kib
from tx_overhead import create, database, postgrest, tx_begin


def status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and status_kib(int(entry), "PPid") == parent:
            found.append(int(entry))
    return found


@dataclass
class Peak:
    backend_anon: int = 0
    server_anon: int = 0
    server_total: int = 0


@contextmanager
def sampled(backend: int) -> Iterator[Peak]:
    """Peak RssAnon of the backend; peak RssAnon of the whole server (the
    postmaster and its children) and of it plus the shared memory mapped."""
    postmaster = status_kib(backend, "PPid")
    peak = Peak()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.backend_anon = max(peak.backend_anon, status_kib(backend, "RssAnon"))
            server = [postmaster, *children(postmaster)]
            anon = sum(status_kib(p, "RssAnon") for p in server)
            shared = max(status_kib(p, "RssShmem") for p in server)
            peak.server_anon = max(peak.server_anon, anon)
            peak.server_total = max(peak.server_total, anon + shared)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


# Rows of the table after the rollback that differ from the copy taken
# before the UPDATE, either way (a row lost, added or changed in any column).
ROWS_DIFFERING = """
select count(*) from (
  (select t::text from s_before t except all select t::text from s_managed t)
  union all
  (select t::text from s_managed t except all select t::text from s_before t)
) differing
"""


def run(dsn: str, label: str, fn: Callable[[psycopg.Connection[Any]], None]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        cpu0 = backend_cpu_ns(pid)
        with sampled(pid) as peak:
            started = time.perf_counter()
            fn(conn)
            wall = time.perf_counter() - started
        cpu = (backend_cpu_ns(pid) - cpu0) / 1e9
        hwm = backend_peak_rss_kib(pid) or 0
        print(
            f"  {label:<44} wall {wall:7.2f} s  cpu {cpu:7.2f} s"
            f"  backend VmHWM {hwm / 1024:7.1f} MiB  backend RssAnon peak"
            f" {peak.backend_anon / 1024:7.1f} MiB  server RssAnon peak"
            f" {peak.server_anon / 1024:7.1f} MiB  server RssAnon+RssShmem peak"
            f" {peak.server_total / 1024:7.1f} MiB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    shape = "4 columns"
    print(f"pgresilience at scale: {args.rows:,}-row UPDATE (each operation on a fresh connection)")
    with database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create(conn, "s_plain", shape, rows=args.rows)
            create(conn, "s_managed", shape, rows=args.rows)
            conn.execute("select resilience.manage_table('s_managed')")
        for number in range(1, args.rounds + 1):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("drop table if exists s_before")
                conn.execute("create unlogged table s_before as table s_managed")
                conn.execute("vacuum (analyze)")
                tx = tx_begin(conn)
            print(f" round {number}:")
            run(
                dsn,
                "UPDATE, unmanaged table",
                lambda c: c.execute("update s_plain set v = v + 1 where grp = 1"),
            )
            run(
                dsn,
                "UPDATE in a logical transaction (header)",
                lambda c, tx=tx: postgrest(
                    c,
                    {"x-resilience-tx": str(tx)},
                    "update s_managed set v = v + 1 where grp = 1",
                    (),
                ),
            )
            run(
                dsn,
                "tx_rollback of it",
                lambda c, tx=tx: c.execute("select resilience.tx_rollback(%s)", (tx,)),
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                differing = conn.execute(ROWS_DIFFERING).fetchone()
            count = differing[0] if differing else -1
            print(f"  rows differing from before the UPDATE, after the rollback: {count}")
            if count != 0:
                sys.exit(1)


if __name__ == "__main__":
    main()
