"""What logical transactions cost, measured side by side in one run.

(a) tx_execute single-row insert vs a plain single-row INSERT, each its own
    autocommit call over the same connection (target: ratio <= 1.5);
(b) a 100,000-row UPDATE inside a logical transaction (the same statement,
    run with setting resilience.tx_id, as tx_execute runs it: the difference
    is capture + claims) vs that UPDATE on an unmanaged table (target <= 2.0);
    (b') also reported: the same update through tx_execute, which in addition
    returns all 100,000 updated rows as JSON (its contract);
(c) that logical transaction's rollback vs the forward update (target <= 2.0);
(d) bulk insert of 100,000 rows into a managed table outside any logical
    transaction vs an unmanaged table (target <= 1.05).

Usage: python bench/tx_overhead.py [--quick]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import scratch_database, server

SCHEMA = """
create table {t} (id bigint primary key, grp int not null, v int not null, note text not null);
"""


@contextmanager
def database() -> Iterator[str]:
    """A fresh database with pgresilience installed, dropped afterwards."""
    with server() as admin_dsn, scratch_database(admin_dsn) as dsn:
        yield dsn


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def make_tables(conn: psycopg.Connection[Any], rows: int) -> None:
    for t, managed in (
        ("plain_t", False),
        ("managed_t", True),
        ("bulk_plain", False),
        ("bulk_managed", True),
    ):
        conn.execute(sql.SQL(SCHEMA.format(t="{}")).format(sql.Identifier(t)))
        if managed:
            conn.execute("select resilience.manage_table(%s)", (t,))
    for t in ("plain_t", "managed_t"):
        conn.execute(
            sql.SQL(
                "insert into {} select g, 1, 0, 'row ' || g from generate_series(1, %s) g"
            ).format(sql.Identifier(t)),
            (rows,),
        )
    conn.execute("vacuum analyze")


def single_row_inserts(conn: psycopg.Connection[Any], n: int, rounds: int) -> tuple[float, float]:
    conn.execute(
        "create table ins_plain (id bigint generated always as identity primary key, name text)"
    )
    conn.execute(
        "create table ins_managed (id bigint generated always as identity primary key, name text)"
    )
    conn.execute("select resilience.manage_table('ins_managed')")
    tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
    payload = Jsonb({"name": "someone"})
    plain, managed = [], []

    def plain_block() -> None:
        for _ in range(n):
            conn.execute("insert into ins_plain (name) values (%s)", ("someone",))

    def managed_block() -> None:
        for _ in range(n):
            conn.execute(
                "select resilience.tx_execute(%s, 'ins_managed', 'insert', %s)", (tx, payload)
            )

    plain_block(), managed_block()  # warm up (plans, caches)
    for _ in range(rounds):
        plain.append(timed(plain_block) / n)
        managed.append(timed(managed_block) / n)
    conn.execute("select resilience.tx_commit(%s)", (tx,))
    return statistics.median(plain), statistics.median(managed)


def big_update(conn: psycopg.Connection[Any], rounds: int) -> dict[str, float]:
    """Medians of: the unmanaged update; the same UPDATE statement on the
    managed table inside a logical transaction (setting resilience.tx_id, as
    tx_execute does internally: the difference is capture + claims only);
    the same update through tx_execute (which also returns every updated row
    as JSON); and the rollback of the captured update."""
    timings: dict[str, list[float]] = {"forward": [], "captured": [], "execute": [], "rollback": []}
    for value in range(1, rounds + 1):
        timings["forward"].append(
            timed(lambda v=value: conn.execute("update plain_t set v = %s where grp = 1", (v,)))
        )
        tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]

        def captured(v: int = value, tx: Any = tx) -> None:
            with conn.transaction():
                conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
                conn.execute("update managed_t set v = %s where grp = 1", (v,))

        timings["captured"].append(timed(captured))
        timings["rollback"].append(
            timed(lambda tx=tx: conn.execute("select resilience.tx_rollback(%s)", (tx,)))
        )
        tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
        timings["execute"].append(
            timed(
                lambda v=value, tx=tx: conn.execute(
                    "select resilience.tx_execute(%s, 'managed_t', 'update', %s, %s)",
                    (tx, Jsonb({"v": v}), Jsonb({"grp": 1})),
                )
            )
        )
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    return {name: statistics.median(values) for name, values in timings.items()}


def bulk_insert(conn: psycopg.Connection[Any], rows: int, rounds: int) -> tuple[float, float]:
    plain, managed = [], []
    statement = "insert into {} select g, 1, g, 'row ' || g from generate_series(1, %s) g"
    for _ in range(rounds + 1):
        for t, sink in (("bulk_plain", plain), ("bulk_managed", managed)):
            conn.execute(sql.SQL("truncate {}").format(sql.Identifier(t)))
            sink.append(
                timed(
                    lambda t=t: conn.execute(sql.SQL(statement).format(sql.Identifier(t)), (rows,))
                )
            )
    return statistics.median(plain[1:]), statistics.median(managed[1:])


def verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "OVER TARGET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short run (smaller tables, fewer rounds)"
    )
    args = parser.parse_args()
    rows = 20_000 if args.quick else 100_000
    n, rounds = (200, 3) if args.quick else (1000, 7)
    big_rounds = 3 if args.quick else 5
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        make_tables(conn, rows)
        plain, managed = single_row_inserts(conn, n, rounds)
        update = big_update(conn, big_rounds)
        bulk_plain, bulk_managed = bulk_insert(conn, rows, big_rounds)
    forward = update["forward"]
    print(f"pgresilience logical transactions overhead ({rows:,} rows; medians)")
    lines = [
        ("(a) tx_execute insert vs plain INSERT", plain * 1e6, managed * 1e6, "us", 1.5),
        (
            f"(b) {rows:,}-row UPDATE: captured vs unmanaged",
            forward * 1e3,
            update["captured"] * 1e3,
            "ms",
            2.0,
        ),
        (
            "(b') the same through tx_execute (+ rows as JSON)",
            forward * 1e3,
            update["execute"] * 1e3,
            "ms",
            2.0,
        ),
        (
            "(c) rollback of (b) vs the forward update",
            forward * 1e3,
            update["rollback"] * 1e3,
            "ms",
            2.0,
        ),
        (
            f"(d) bulk insert {rows:,} rows: managed vs unmanaged",
            bulk_plain * 1e3,
            bulk_managed * 1e3,
            "ms",
            1.05,
        ),
    ]
    for label, base, ours, unit, target in lines:
        ratio = ours / base
        print(
            f"  {label:<52} {base:9.2f} {unit} -> {ours:9.2f} {unit}  ratio {ratio:5.2f}"
            f"  (target <= {target}) {verdict(ratio, target)}"
        )


if __name__ == "__main__":
    main()
