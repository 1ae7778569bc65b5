"""What schema tracking costs DDL, measured side by side in one run.

(a) N CREATE TABLE in one transaction, tracked database vs plain database
    (target: ratio <= 1.5);
(b) one ALTER TABLE ADD COLUMN in a database of 5,000 tables: extra time with
    tracking (target <= 20 ms; the snapshot re-reads only the touched table);
(c) commit-to-callback latency of SchemaVersionManager's listener
    (median target <= 50 ms).

Usage: python bench/ddl_overhead.py [--quick]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from pgresilience import installer
from pgresilience.schema import ChangeList, SchemaVersionManager

from _support import create_database, drop_database, server

TRACKED, PLAIN = "bench_ddl_tracked", "bench_ddl_plain"


def fresh_database(admin_dsn: str, name: str, *, tracked: bool) -> str:
    dsn = create_database(admin_dsn, name)
    if tracked:
        report = installer.install(dsn)
        assert report.event_triggers, "the benchmark needs a superuser (event triggers)"
    return dsn


def create_tables(conn: psycopg.Connection[Any], prefix: str, count: int) -> float:
    """Seconds to create ``count`` tables in one transaction, commit included."""
    start = time.perf_counter()
    with conn.transaction():
        for i in range(count):
            conn.execute(
                sql.SQL(
                    "create table {} (id bigint generated always as identity primary key, "
                    "name text not null, created_at timestamptz not null default now())"
                ).format(sql.Identifier(f"{prefix}{i}"))
            )
    return time.perf_counter() - start


def drop_tables(conn: psycopg.Connection[Any], prefix: str, count: int) -> None:
    with conn.transaction():
        for i in range(count):
            conn.execute(sql.SQL("drop table {}").format(sql.Identifier(f"{prefix}{i}")))


def bench_create(tracked: str, plain: str, count: int, rounds: int) -> float:
    times: dict[str, list[float]] = {"tracked": [], "plain": []}
    with (
        psycopg.connect(tracked, autocommit=True) as t,
        psycopg.connect(plain, autocommit=True) as p,
    ):
        for conn in (t, p):  # warm-up: the first fold of a session loads PL/Python
            create_tables(conn, "warmup_", 2)
            drop_tables(conn, "warmup_", 2)
        for r in range(rounds):
            # Alternate who goes first: load from other processes hits both alike.
            order = (("plain", p), ("tracked", t)) if r % 2 == 0 else (("tracked", t), ("plain", p))
            for label, conn in order:
                times[label].append(create_tables(conn, f"a{r}_", count))
                drop_tables(conn, f"a{r}_", count)
    tracked_s, plain_s = min(times["tracked"]), min(times["plain"])
    ratio = tracked_s / plain_s
    paired = statistics.median(
        with_ / without for with_, without in zip(times["tracked"], times["plain"], strict=True)
    )
    print(
        f"(a) {count} CREATE TABLE in one transaction: tracked {tracked_s * 1000:.0f} ms, "
        f"plain {plain_s * 1000:.0f} ms, ratio {ratio:.2f} (target <= 1.5) "
        f"[best of {rounds}; median of per-round ratios {paired:.2f}]"
    )
    return ratio


def bench_alter(tracked: str, plain: str, tables: int, alters: int) -> float:
    medians: dict[str, float] = {}
    with (
        psycopg.connect(tracked, autocommit=True) as t,
        psycopg.connect(plain, autocommit=True) as p,
    ):
        for conn in (t, p):
            for start in range(0, tables, 500):
                create_tables(conn, f"b{start}_", min(500, tables - start))
        samples: dict[str, list[float]] = {"tracked": [], "plain": []}
        for i in range(alters):
            for label, conn in (("plain", p), ("tracked", t)):
                target = sql.Identifier(f"b0_{i % 500}")
                statement = sql.SQL("alter table {} add column {} integer").format(
                    target, sql.Identifier(f"extra_{i}")
                )
                begin = time.perf_counter()
                conn.execute(statement)  # autocommit: the commit (and the fold) is included
                samples[label].append(time.perf_counter() - begin)
        medians = {label: statistics.median(values) for label, values in samples.items()}
        objects = t.execute("select count(*) from resilience.schema_objects").fetchone()
    extra_ms = (medians["tracked"] - medians["plain"]) * 1000
    print(
        f"(b) ALTER TABLE ADD COLUMN among {tables} tables ({objects[0] if objects else '?'} "
        f"tracked objects): tracked {medians['tracked'] * 1000:.1f} ms, plain "
        f"{medians['plain'] * 1000:.1f} ms, extra {extra_ms:.1f} ms (target <= 20 ms) "
        f"[median of {alters}]"
    )
    return extra_ms


def bench_latency(tracked: str, samples: int) -> float:
    arrivals: queue.Queue[tuple[int, float]] = queue.Queue()

    def on_change(changes: ChangeList) -> None:
        arrivals.put((changes.version, time.perf_counter()))

    after_commit: list[float] = []
    after_send: list[float] = []
    with (
        SchemaVersionManager(tracked) as manager,
        psycopg.connect(tracked, autocommit=True) as conn,
    ):
        manager.initialize()
        manager.on_schema_change(on_change)
        assert manager.wait_listening()
        for i in range(samples):
            sent = time.perf_counter()
            conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(f"c{i}")))
            committed = time.perf_counter()
            _, arrived = arrivals.get(timeout=10)
            # The callback can run before execute() has even returned here.
            after_commit.append(max(arrived - committed, 0.0))
            after_send.append(arrived - sent)
    median_ms = statistics.median(after_send) * 1000
    print(
        f"(c) commit-to-callback latency: median {statistics.median(after_commit) * 1000:.1f} ms "
        f"after the commit returned; median {median_ms:.1f} ms, max "
        f"{max(after_send) * 1000:.1f} ms from sending the DDL (target median <= 50 ms) "
        f"[{samples} commits]"
    )
    return median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smaller sizes)")
    args = parser.parse_args()
    create_count, rounds = (300, 2) if args.quick else (1000, 5)
    tables, alters = (1000, 10) if args.quick else (5000, 30)
    samples = 10 if args.quick else 30

    with server() as admin_dsn:
        tracked = fresh_database(admin_dsn, TRACKED, tracked=True)
        plain = fresh_database(admin_dsn, PLAIN, tracked=False)
        try:
            ratio = bench_create(tracked, plain, create_count, rounds)
            extra = bench_alter(tracked, plain, tables, alters)
            latency = bench_latency(tracked, samples)
        finally:
            drop_database(admin_dsn, TRACKED)
            drop_database(admin_dsn, PLAIN)
    verdict = ratio <= 1.5 and extra <= 20 and latency <= 50
    print(f"targets {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
