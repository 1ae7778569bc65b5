"""A probe, not a target: what the claim guard of a plain UPDATE costs when
its query is driven from the transition tables instead of the image table.

In a scratch database only, the generated capture function of one managed
table is rewritten (pg_get_functiondef, a regular expression, CREATE OR
REPLACE): every `from <image> as i where i.claim [and i.tx_id <> v_tx_id]
and (exists (... old_rows ...) or exists (... new_rows ...))` becomes a
UNION ALL of the written keys joined to the claim index. The package's SQL
is not touched. Then single-row UPDATEs outside any logical transaction,
while another transaction holds --claims claims on other rows, on: an
unmanaged table; a managed table as generated; the rewritten one; the
rewritten one without its per-statement shape check (`_require_shape`,
to show that check's share; a guarantee, not a proposal to drop it).
Rounds as in the other benchmarks (VACUUM (ANALYZE), rotated order,
warm-up, median [min-max] of wall and backend-CPU ratios).

Usage: python bench/guard_probe.py [--claims N] [--calls N] [--rounds N]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from _support import Rounds, Timer, ratio_line
from tx_overhead import create, database, postgrest, tx_begin, vacuum

GUARD = re.compile(
    r"from (?P<img>\S+) as i\s+where i\.claim and (?P<mine>i\.tx_id <> v_tx_id and )?"
    r"\(exists \(select 1 from old_rows as o where (?P<o>[^\n]+?)\)\s+"
    r"or exists \(select 1 from new_rows as n where (?P<n>[^\n]+?)\)\)\s+limit 1;"
)


def driven_by_written_keys(match: re.Match[str]) -> str:
    # One probe of the claim index per written key (LATERAL ... LIMIT 1 keeps
    # the planner from hashing the whole image table: transition tables have
    # no statistics). Text of a generated function, not client input.
    mine = match["mine"] or ""
    probe = (
        "cross join lateral (select i.tx_id from {img} as i"
        " where i.claim and {mine}{cond} limit 1) as i"
    )
    old = probe.format(img=match["img"], mine=mine, cond=match["o"])
    new = probe.format(img=match["img"], mine=mine, cond=match["n"])
    return (
        "from (select i.tx_id from old_rows as o "  # noqa: S608
        + old
        + " union all select i.tx_id from new_rows as n "
        + new
        + ") as i limit 1;"
    )


SHAPE_CHECK = "if not resilience._require_shape(v_root) then"


def rewrite_guard(conn: psycopg.Connection[Any], table: str, drop_shape_check: bool = False) -> int:
    """Rewrite `table`'s capture function; how many guard queries changed.
    drop_shape_check: also skip the per-statement shape check (to measure
    its share only: that check is a guarantee, not something to drop)."""
    row = conn.execute(
        "select pg_get_functiondef(m.capture_function::oid) from resilience.managed_tables m"
        " where m.relation = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None
    definition, count = GUARD.subn(driven_by_written_keys, row[0])
    if drop_shape_check:
        count = count if SHAPE_CHECK in definition else 0
        definition = definition.replace(SHAPE_CHECK, "if false then")
    if count:
        conn.execute(sql.SQL(definition))  # type: ignore[arg-type]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.calls, max(5, args.rounds)
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        tables = ("q_plain", "q_managed", "q_rewritten", "q_noshape")
        for t in tables:
            create(conn, t, "4 columns", rows=n + args.claims)
        for t in tables[1:]:
            conn.execute("select resilience.manage_table(%s)", (t,))
        changed = rewrite_guard(conn, "q_rewritten")
        changed = min(changed, rewrite_guard(conn, "q_noshape", drop_shape_check=True))
        print(f"guard queries rewritten in q_rewritten's capture function: {changed}")
        if not changed:
            # The probed rewrite went into the package (1c76eef); the probe's
            # figures in docs/benchmarks.md are of main at ea34c83.
            print(
                "the generated guard is already driven by the written keys (since 1c76eef):"
                " nothing to compare; this probe reproduces its figures on main at ea34c83"
            )
            sys.exit(2)
        holder = tx_begin(conn)
        for t in tables[1:]:
            postgrest(
                conn,
                {"x-resilience-tx": str(holder)},
                sql.SQL("update {} set v = -1 where id > %s").format(sql.Identifier(t)),
                (n,),
            )

        def variant(table: str) -> Callable[[Timer], None]:
            statement = sql.SQL("update {} set v = v + 1 where id = %s").format(
                sql.Identifier(table)
            )
            return lambda timer: timer(
                table, lambda: [conn.execute(statement, (i,)) for i in range(1, n + 1)]
            )

        results = Rounds(
            conn,
            {t: variant(t) for t in tables},
            vacuum(conn),
            rounds=rounds,
        ).run()
        # a claimed row is still refused by the rewritten guard
        try:
            conn.execute("update q_rewritten set v = 0 where id = %s", (n + 1,))
            refused = "NO"
        except psycopg.errors.LockNotAvailable:
            refused = "yes (55P03)"
        conn.execute("select resilience.tx_rollback(%s)", (holder,))
    print(
        f"single-row UPDATE outside a logical transaction, {args.claims:,} claims held"
        f" on other rows ({n} calls per round, {rounds} rounds)"
    )
    print(ratio_line(results, "managed as generated vs unmanaged", "q_managed", "q_plain", 1.5, n))
    print(
        ratio_line(
            results,
            "guard driven by the written keys vs unmanaged",
            "q_rewritten",
            "q_plain",
            1.5,
            n,
        )
    )
    print(
        ratio_line(
            results,
            "  the same without the shape check (its share)",
            "q_noshape",
            "q_plain",
            None,
            n,
            "(probe)",
        )
    )
    print(f"  a claimed row refused by the rewritten guard: {refused}")


if __name__ == "__main__":
    main()
