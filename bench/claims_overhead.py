"""(e) The claim guard's write-path cost outside any logical transaction
(issue 11), side by side in one run: UPDATEs, each its own autocommit
statement, on a managed table vs an unmanaged one,
(1) with no claims on the table (target: median wall ratio <= 1.15) and
(2) while a logical transaction holds claims on other rows of it (<= 1.5).

The single-row UPDATE is what the targets are about; 100-row UPDATEs show
how the guard's per-statement cost amortizes (no target).

Alternative designs (bench/_designs.py, "(floor)"), on bench-local tables
measured in the same rounds: an EMPTY statement-level trigger declaring
both transition tables (what the mandated capture trigger costs before it
does anything); the same as SECURITY DEFINER with a pinned search path
(privilege separation: a capture whose images writers may neither read
nor forge runs as their owner), and that with the one probe a table
without claims owes; statement-level capture with typed images whose row is the
claim; row-level capture whose guard checks each written key. Designs that
keep the contract of a captured write ("(design)"; statement-level and
row-level capture, and the statement-level one with privilege separation:
its capture SECURITY DEFINER with a pinned search path, bench/_designs.py):
for a plain write they owe what the package's guard owes (a table without
claims passes after one probe, a claimed key, old or new, is refused).

Every round starts with VACUUM (ANALYZE) and runs the variants in an order
rotated per round; one warm-up round is discarded. Two table shapes (4 and
6 columns, as bench/tx_overhead.py).

Usage: python bench/claims_overhead.py [--quick] [--rounds N]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import _designs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import Rounds, Timer, ratio_line
from tx_overhead import SHAPES, create, database, postgrest, tx_begin, vacuum

# Rows 1..WORKLOAD are written by the workload (grp 1); rows WORKLOAD+1..ROWS
# (grp 2) are claimed in case (2) and never written by it.
WORKLOAD = 10_000
ROWS = 2 * WORKLOAD
VARIANTS = (
    "plain",
    "managed",
    "empty",
    "empty_definer",
    "probe_definer",
    "typed",
    "row",
    "whole_statement",
    "whole_row",
    "separated",
)


def make_tables(conn: psycopg.Connection[Any], shape: str, s: str) -> None:
    _, columns, _ = SHAPES[shape]
    for v in VARIANTS:
        table = f"g_{v}_{s}"
        create(conn, table, shape, rows=ROWS)
        conn.execute(
            sql.SQL("update {} set grp = 2 where id > %s").format(sql.Identifier(table)),
            (WORKLOAD,),
        )
    conn.execute("select resilience.manage_table(%s)", (f"g_managed_{s}",))
    for v in ("empty", "empty_definer", "probe_definer"):
        _designs.run(
            conn,
            "create trigger {trg} after update on {t} referencing old table as old_rows"
            " new table as new_rows for each statement execute function {fn}()",
            trg=f"g_{v}_{s}_t",
            t=f"g_{v}_{s}",
            fn=f"floor_{v}",
        )
    _designs.typed_image(conn, f"g_typed_{s}", columns)
    _designs.row_level(conn, f"g_row_{s}", "update")
    _designs.contract_statement(conn, f"g_whole_statement_{s}", columns)
    _designs.contract_row(conn, f"g_whole_row_{s}", columns)
    _designs.contract_separated(conn, f"g_separated_{s}", columns)


def measure(conn: psycopg.Connection[Any], s: str, width: int, n: int, rounds: int) -> Rounds:
    span = WORKLOAD - width + 1
    position = [0]

    def variant(v: str) -> Callable[[Timer], None]:
        statement = sql.SQL("update {} set v = v + 1 where id between %s and %s").format(
            sql.Identifier(f"g_{v}_{s}")
        )

        def block() -> None:
            for _ in range(n):
                start = position[0] % span + 1
                position[0] += 1
                conn.execute(statement, (start, start + width - 1))

        return lambda timer: timer(v, block)

    return Rounds(conn, {v: variant(v) for v in VARIANTS}, vacuum(conn), rounds=rounds).run()


def hold_claims(conn: psycopg.Connection[Any], s: str) -> tuple[Any, Any]:
    """A logical transaction claiming rows WORKLOAD+1..ROWS of the managed
    table, and a floor transaction claiming them on the floor tables."""
    tx = tx_begin(conn)
    conn.execute(
        "select resilience.tx_execute(%s, %s, 'update', %s, %s)",
        (tx, f"g_managed_{s}", Jsonb({"v": -1}), Jsonb({"grp": 2})),
    )
    floor_tx = _designs.new_floor_tx(conn)
    for v in ("typed", "row", "whole_statement", "whole_row", "separated"):
        postgrest(
            conn,
            {"x-resilience-tx": str(floor_tx)},
            sql.SQL("update {} set v = -1 where grp = 2").format(sql.Identifier(f"g_{v}_{s}")),
            (),
        )
    return tx, floor_tx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (still 5 rounds)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds after the warm-up")
    args = parser.parse_args()
    rounds = max(5, args.rounds or (5 if args.quick else 7))
    widths = ((1, 100 if args.quick else 400), (100, 20 if args.quick else 60))
    print(f"pgresilience claim guard (rounds: {rounds} after 1 warm-up)")
    print("ratio: wall median [min-max], backend cpu median [min-max], (median times)")
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        _designs.make_common(conn)
        for shape in SHAPES:
            s = "4" if shape == "4 columns" else "6"
            make_tables(conn, shape, s)
            free = [(w, n, measure(conn, s, w, n, rounds)) for w, n in widths]
            tx, _ = hold_claims(conn, s)
            held = [(w, n, measure(conn, s, w, n, rounds)) for w, n in widths]
            conn.execute("select resilience.tx_rollback(%s)", (tx,))
            for case, results, target in (
                ("no claims on the table", free, 1.15),
                (f"claims held on {ROWS - WORKLOAD:,} other rows", held, 1.5),
            ):
                print(f"\n{shape}, {case}:")
                for width, n, r in results:
                    what = "single-row UPDATE" if width == 1 else f"{width}-row UPDATE (amortized)"
                    for line in (
                        ratio_line(
                            r,
                            f"(e) {what}: managed vs unmanaged",
                            "managed",
                            "plain",
                            target if width == 1 else None,
                            n,
                            "(no target)",
                        ),
                        ratio_line(
                            r,
                            "    floor: EMPTY trigger + transition tables",
                            "empty",
                            "plain",
                            None,
                            n,
                        ),
                        ratio_line(
                            r,
                            "    floor: the same, SECURITY DEFINER, pinned search_path",
                            "empty_definer",
                            "plain",
                            None,
                            n,
                        ),
                        ratio_line(
                            r,
                            "    floor: the same + the probe for claims on the table",
                            "probe_definer",
                            "plain",
                            None,
                            n,
                        ),
                        ratio_line(
                            r,
                            "    floor: statement-level typed capture + guard",
                            "typed",
                            "plain",
                            None,
                            n,
                        ),
                        ratio_line(
                            r,
                            "    floor: row-level capture + per-key guard",
                            "row",
                            "plain",
                            None,
                            n,
                        ),
                        ratio_line(
                            r,
                            "    design: statement-level capture, contract of a write",
                            "whole_statement",
                            "plain",
                            None,
                            n,
                            "(design)",
                        ),
                        ratio_line(
                            r,
                            "    design: row-level capture, contract of a write",
                            "whole_row",
                            "plain",
                            None,
                            n,
                            "(design)",
                        ),
                        ratio_line(
                            r,
                            "    design: statement-level, privilege-separated",
                            "separated",
                            "plain",
                            None,
                            n,
                            "(design)",
                        ),
                    ):
                        print(line, flush=True)


if __name__ == "__main__":
    main()
