"""The claim guard's write-path cost outside any logical transaction,
measured side by side in one run: single-row UPDATEs (each its own autocommit
statement) on a managed table vs an unmanaged one (target: ratio <= 1.05),
(1) with no claims on the table and (2) while a logical transaction holds
claims on other rows of it (the guard then checks the written keys).

Usage: python bench/claims_overhead.py [--quick]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

# The database helper lives next to us in tx_overhead.py.
_spec = importlib.util.spec_from_file_location(
    "tx_overhead", Path(__file__).with_name("tx_overhead.py")
)
assert _spec is not None and _spec.loader is not None
tx_overhead = importlib.util.module_from_spec(_spec)
sys.modules["tx_overhead"] = tx_overhead
_spec.loader.exec_module(tx_overhead)

ROWS = 10_000


def per_statement(conn: psycopg.Connection[Any], table: str, n: int) -> float:
    statement = sql.SQL("update {} set v = v + 1 where id = %s").format(sql.Identifier(table))
    started = time.perf_counter()
    for i in range(n):
        conn.execute(statement, (i % 5_000 + 1,))
    return (time.perf_counter() - started) / n


def measure(conn: psycopg.Connection[Any], n: int, rounds: int) -> tuple[float, float]:
    plain, managed = [], []
    per_statement(conn, "g_plain", n), per_statement(conn, "g_managed", n)  # warm up
    for _ in range(rounds):
        plain.append(per_statement(conn, "g_plain", n))
        managed.append(per_statement(conn, "g_managed", n))
    return statistics.median(plain), statistics.median(managed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    n, rounds = (500, 3) if args.quick else (3000, 9)
    with tx_overhead.database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        for t in ("g_plain", "g_managed"):
            name = sql.Identifier(t)
            conn.execute(
                sql.SQL("create table {} (id bigint primary key, v int not null)").format(name)
            )
            conn.execute(
                sql.SQL("insert into {} select g, 0 from generate_series(1, %s) g").format(name),
                (ROWS,),
            )
        conn.execute("select resilience.manage_table('g_managed')")
        conn.execute("vacuum analyze")
        free = measure(conn, n, rounds)
        tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
        conn.execute(
            "select resilience.tx_execute(%s, 'g_managed', 'update', %s, %s)",
            (tx, Jsonb({"v": -1}), Jsonb({"v": 0})),
        )  # claims rows 5001.. (untouched by the workload: ids 1..5000 were updated above)
        held = measure(conn, n, rounds)
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    print("pgresilience claim guard: single-row UPDATE, managed vs unmanaged table (medians)")
    for label, (base, ours) in (
        ("no claims on the table", free),
        ("claims held on other rows", held),
    ):
        ratio = ours / base
        print(
            f"  {label:<28} {base * 1e6:8.1f} us -> {ours * 1e6:8.1f} us  ratio {ratio:5.2f}"
            f"  (target <= 1.05) {'ok' if ratio <= 1.05 else 'OVER TARGET'}"
        )


if __name__ == "__main__":
    main()
