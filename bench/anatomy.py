"""Step by step: where the backend CPU of a `lock` call (target (f)) and of
a plain write on a managed table (target (e)) goes (issue 11).

Lock, measured side by side on one table (4 columns, as
bench/tx_overhead.py), per autocommit call, backend CPU from
/proc/<pid>/schedstat:

* `SELECT ... FOR UPDATE` of one row (the baseline of (f));
* `tx_execute(tx, t, 'lock', match => {"id": k})`, the package's call;
* one SECURITY DEFINER function per table doing everything the package's
  lock does for a lock by primary key, in one body: the lazy reap probe, the
  transaction check (owner role and JWT subject, share lock), the caller's
  privileges (SELECT, UPDATE on a column; tables with RLS would take the
  general path), the claimed-tables row, FOR UPDATE NOWAIT + the image row
  that is the claim, the journal and audit rows. It is generated here over
  the package's own image table, in the scratch database only, and run
  also cut short after each step ("-> step"): the cost of each step is the
  difference to the line above it;
* the table's generated lock by primary key (`_lock_by_key_<oid>`, the
  invoker FOR UPDATE under the caller's grants and RLS, then the definer
  image and claim), called directly: `tx_execute`'s lock without its
  dispatch (table resolution, lazy reap probe, descriptor, EXECUTE);
* the floors of bench/_designs.py for (f): one function FOR UPDATE + claim,
  and the same writing journal and audit rows.

Insert (target (a)), the same way: a plain single-row INSERT, `tx_execute`
insert, and a static per-table SECURITY INVOKER function over the same
managed table (the lazy reap probe, the transaction id setting, a plan-cached
INSERT of every column from the jsonb, RETURNING as jsonb), so that the
package's own capture trigger does everything else (transaction check,
typed image and claim, journal, audit): what a generated per-table insert
behind `tx_execute` would cost. It does not apply column defaults (the
benchmark names every column) nor filter RETURNING by column grants.

Plain write (the claim guard with no claims, target (e)): a single-row
UPDATE on an unmanaged table, on a managed one, and on managed ones whose
capture function was altered in the scratch database only: without its
pinned search_path, and also without SECURITY DEFINER (the floors' trigger
has neither; ours needs both, see docs/benchmarks.md).

Each line prints backend CPU and wall time per call, median [min-max] of
the rounds, and the ratio of the medians to the baseline.

Usage: python bench/anatomy.py [--calls N] [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import _designs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import backend_cpu_ns
from tx_overhead import create, database, tx_begin

CUTS = ["entry", "reap", "check", "privileges", "claimed table", "lock and image", "all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds after the warm-up")
    args = parser.parse_args()
    table = "anatomy"
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        variants = len(CUTS) + 4
        create(conn, table, "4 columns", rows=args.calls * variants * (args.rounds + 1))
        conn.execute("select resilience.manage_table(%s)", (table,))
        columns = ["id", "grp", "v", "note"]
        functions = {cut: _designs.contract_lock(conn, table, columns, cut=cut) for cut in CUTS}
        for statement in _designs.COMMON:
            conn.execute(statement)
        lock_by_key = _designs.lock_by_key(conn, table)
        floor = _designs.lock_function(conn, table)
        floor_recorded = _designs.lock_function(conn, table, recorded=True)
        floor_tx = _designs.new_floor_tx(conn)

        keys = itertools.count(1)

        def call(statement: Any, *params: Any) -> Callable[[Any], object]:
            return lambda tx: conn.execute(
                statement, tuple(tx if p is None else p() for p in params)
            )

        def key() -> int:
            return next(keys)

        def match() -> Jsonb:
            return Jsonb({"id": next(keys)})

        measured: dict[str, Callable[[Any], object]] = {
            "SELECT ... FOR UPDATE": call(
                sql.SQL("select * from {} where id = %s for update").format(sql.Identifier(table)),
                key,
            ),
            "tx_execute lock": call(
                "select resilience.tx_execute(%s, %s, 'lock', match => %s)",
                None,
                lambda: table,
                match,
            ),
        }
        measured["generated lock by key, direct"] = call(
            sql.SQL("select * from {}(%s, %s)").format(sql.SQL(lock_by_key)), None, match
        )
        for cut in CUTS:
            label = "one function, whole contract" if cut == "all" else f"  -> {cut}"
            measured[label] = call(
                sql.SQL("select {}(%s, %s)").format(sql.SQL(functions[cut])), None, match
            )
        measured["floor: FOR UPDATE + claim"] = call(
            sql.SQL("select {}(%s, %s)").format(sql.Identifier(floor)), lambda: floor_tx, key
        )
        measured["floor: + journal and audit"] = call(
            sql.SQL("select {}(%s, %s)").format(sql.Identifier(floor_recorded)),
            lambda: floor_tx,
            key,
        )

        report("lock", measure(conn, measured, args), "SELECT ... FOR UPDATE", args)
        insert_anatomy(conn, args)
        guard_anatomy(conn, args)


Times = dict[str, tuple[list[float], list[float]]]


def measure(
    conn: psycopg.Connection[Any], measured: dict[str, Callable[[Any], object]], args: Any
) -> Times:
    """Backend CPU and wall time per call (us) of each variant, per round:
    VACUUM (ANALYZE) first, variants in an order rotated per round, each
    round in a logical transaction of its own (rolled back), round 0 the
    warm-up."""
    pid = conn.info.backend_pid
    times: Times = {label: ([], []) for label in measured}
    for round_no in range(args.rounds + 1):
        conn.execute("vacuum (analyze)")
        tx = tx_begin(conn)
        labels = list(measured)
        shift = round_no % len(labels)
        for label in labels[shift:] + labels[:shift]:
            cpu_before, wall_before = backend_cpu_ns(pid), time.perf_counter_ns()
            for _ in range(args.calls):
                measured[label](tx)
            wall, cpu = time.perf_counter_ns() - wall_before, backend_cpu_ns(pid) - cpu_before
            if round_no:  # round 0 is the warm-up
                times[label][0].append(cpu / args.calls / 1e3)
                times[label][1].append(wall / args.calls / 1e3)
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    return times


def insert_anatomy(conn: psycopg.Connection[Any], args: Any) -> None:
    columns = ["id", "grp", "v", "note"]
    for table in ("ins_plain", "ins_managed", "ins_static"):
        create(conn, table, "4 columns")
    for table in ("ins_managed", "ins_static"):
        conn.execute("select resilience.manage_table(%s)", (table,))
    static_insert = _designs.contract_insert(conn, "ins_static")
    keys = itertools.count(1)

    def row() -> dict[str, Any]:
        key = next(keys)
        return {"id": key, "grp": 1, "v": 0, "note": f"row {key}"}

    plain = sql.SQL("insert into ins_plain ({}) values (%s, %s, %s, %s)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    measured: dict[str, Callable[[Any], object]] = {
        "INSERT": lambda tx: conn.execute(plain, tuple(row().values())),
        "tx_execute insert": lambda tx: conn.execute(
            "select resilience.tx_execute(%s, 'ins_managed', 'insert', %s)", (tx, Jsonb(row()))
        ),
        "static per-table insert": lambda tx: conn.execute(
            sql.SQL("select {}(%s, %s)").format(sql.SQL(static_insert)), (tx, Jsonb(row()))
        ),
    }
    report("insert", measure(conn, measured, args), "INSERT", args)


def report(what: str, times: Times, baseline: str, args: Any) -> None:
    cpu_base = statistics.median(times[baseline][0])
    wall_base = statistics.median(times[baseline][1])
    print(
        f"\n{what}: per call, median [min-max] of {args.rounds} rounds, {args.calls} calls each;"
        f" backend CPU, then wall"
    )
    for label, (cpu, wall) in times.items():
        c, w = statistics.median(cpu), statistics.median(wall)
        print(
            f"  {label:<34} cpu {c:7.1f} us [{min(cpu):.1f}-{max(cpu):.1f}] x{c / cpu_base:.2f}"
            f"   wall {w:7.1f} us [{min(wall):.1f}-{max(wall):.1f}] x{w / wall_base:.2f}"
        )


GUARD_VARIANTS = {
    "UPDATE, unmanaged table": [],
    "UPDATE, managed table": None,
    "  capture without SET enable_seqscan": ["alter function {} reset enable_seqscan"],
    "  capture without SET search_path": ["alter function {} reset search_path"],
    "  ... and without SECURITY DEFINER": [
        "alter function {} reset search_path",
        "alter function {} security invoker",
    ],
}


def guard_anatomy(conn: psycopg.Connection[Any], args: Any) -> None:
    tables = {}
    for number, (label, alterations) in enumerate(GUARD_VARIANTS.items()):
        table = f"guard_{number}"
        create(conn, table, "4 columns", rows=args.calls)
        if alterations != []:
            conn.execute("select resilience.manage_table(%s)", (table,))
            row = conn.execute(
                "select capture_function::regproc::text from resilience.managed_tables"
                " where relation = %s::regclass",
                (table,),
            ).fetchone()
            assert row is not None
            for alteration in alterations or []:
                conn.execute(sql.SQL(alteration).format(sql.SQL(row[0] + "()")))
        tables[label] = sql.SQL("update {} set v = v + 1 where id = %s").format(
            sql.Identifier(table)
        )
    keys = itertools.cycle(range(1, args.calls + 1))

    def update(statement: sql.Composed) -> Callable[[Any], object]:
        return lambda tx: conn.execute(statement, (next(keys),))

    measured = {label: update(statement) for label, statement in tables.items()}
    report("plain write, no claims", measure(conn, measured, args), "UPDATE, unmanaged table", args)


if __name__ == "__main__":
    main()
