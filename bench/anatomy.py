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
* the floors of bench/_designs.py for (f): one function FOR UPDATE + claim,
  and the same writing journal and audit rows.

Plain write (the claim guard with no claims, target (e)): a single-row
UPDATE on an unmanaged table, on a managed one, and on managed ones whose
capture function was altered in the scratch database only: without its
pinned search_path, and also without SECURITY DEFINER (the floors' trigger
has neither; ours needs both, see docs/benchmarks.md).

Usage: python bench/anatomy.py [--calls N] [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable
from typing import Any

import _designs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import backend_cpu_ns
from tx_overhead import create, database, tx_begin

# The contract-keeping one-function lock of table {t} (key id bigint), over
# the package's image table {img} and row type {row}. {cut} ends it early.
ONE_FUNCTION_LOCK = """
create function {fn}(p_tx uuid, p_match jsonb, out locked_rows jsonb, out locked_count int8)
language plpgsql volatile security definer set search_path = ''
set plan_cache_mode = force_generic_plan as $f$
#variable_conflict use_variable
declare
    v_tx resilience.transactions;
    v_root pg_catalog.regclass := {tname}::pg_catalog.regclass;
    v_seq pg_catalog.int8;
    v_rows pg_catalog.int8;
    v_first pg_catalog.bool;
begin
    if {cut} = 'entry' then return; end if;
    perform resilience._reap_if_expired();
    if {cut} = 'reap' then return; end if;
    v_tx := resilience._tx_for_capture(p_tx::pg_catalog.text);
    if {cut} = 'check' then return; end if;
    if not (pg_catalog.has_table_privilege(v_tx.owner_role, v_root, 'SELECT')
        and pg_catalog.has_any_column_privilege(v_tx.owner_role, v_root, 'UPDATE'))
        or (select c.relrowsecurity from pg_catalog.pg_class as c where c.oid = v_root)
    then
        return;
    end if;
    if {cut} = 'privileges' then return; end if;
    insert into resilience.claimed_tables (relation, tx_id) values (v_root, v_tx.id)
    on conflict do nothing;
    get diagnostics v_rows = row_count;
    v_first := v_rows > 0;
    if {cut} = 'claimed table' then return; end if;
    v_seq := pg_catalog.nextval('resilience.restore_point_seq');
    with l as (
        select t.* from {t} as t, pg_catalog.jsonb_to_record(p_match) as m (id bigint)
        where t.id = m.id for update of t nowait
    ), i as (
        insert into {img} (tx_id, seq, op, claim, k1, b)
        select v_tx.id, v_seq, 'l',
            case when v_first then true
                when exists (select 1 from {img} as e
                    where e.claim and e.tx_id = v_tx.id and e.k1 operator(pg_catalog.=) l.id)
                then null else true end,
            l.id, row(l.id, l.grp, l.v, l.note)::{row}
        from l returning 1
    )
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(l.*)), '[]'),
        (select pg_catalog.count(*) from i)
    into locked_rows, locked_count from l;
    if {cut} = 'lock and image' then return; end if;
    v_rows := locked_count;
    with s as (
        insert into resilience.tx_statements (tx_id, seq, relation, operation, row_count)
        values (v_tx.id, v_seq, v_root, 'lock', v_rows)
    )
    insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
    values ('execute', v_tx.id, v_tx.owner_role, v_tx.owner_sub, pg_catalog.jsonb_build_object(
        'table', v_root::pg_catalog.text, 'operation', 'lock', 'rows', v_rows, 'via', 'tx_execute',
        'duration_ms', pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp())
            * 1000, 3)));
end $f$
"""

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
        image, row_type = conn.execute(
            "select image_table::text, image_type::text from resilience.managed_tables"
            " where relation = %s::regclass",
            (table,),
        ).fetchone() or (None, None)
        functions = {}
        for cut in CUTS:
            fn = f"resilience.anatomy_lock_{CUTS.index(cut)}"
            conn.execute(
                sql.SQL(ONE_FUNCTION_LOCK).format(
                    fn=sql.SQL(fn),
                    t=sql.Identifier("public", table),
                    tname=sql.Literal(f"public.{table}"),
                    img=sql.SQL(str(image)),
                    row=sql.SQL(str(row_type)),
                    cut=sql.Literal(cut),
                )
            )
            functions[cut] = fn
        for statement in _designs.COMMON:
            conn.execute(statement)
        floor = _designs.lock_function(conn, table)
        floor_recorded = _designs.lock_function(conn, table, recorded=True)
        floor_tx = _designs.new_floor_tx(conn)

        keys = itertools.count(1)

        def call(statement: Any, *params: Any) -> Callable[[Any], None]:
            return lambda tx: conn.execute(
                statement, tuple(tx if p is None else p() for p in params)
            )

        def key() -> int:
            return next(keys)

        def match() -> Jsonb:
            return Jsonb({"id": next(keys)})

        measured: dict[str, Callable[[Any], None]] = {
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

        pid = conn.info.backend_pid
        cpu: dict[str, list[float]] = {label: [] for label in measured}
        for round_no in range(args.rounds + 1):
            conn.execute("vacuum (analyze)")
            tx = tx_begin(conn)
            labels = list(measured)
            shift = round_no % len(labels)
            for label in labels[shift:] + labels[:shift]:
                before = backend_cpu_ns(pid)
                for _ in range(args.calls):
                    measured[label](tx)
                if round_no:  # round 0 is the warm-up
                    cpu[label].append((backend_cpu_ns(pid) - before) / args.calls / 1e3)
            conn.execute("select resilience.tx_rollback(%s)", (tx,))

        report("lock", cpu, "SELECT ... FOR UPDATE", args)
        guard_anatomy(conn, args)


def report(what: str, cpu: dict[str, list[float]], baseline: str, args: Any) -> None:
    base = statistics.median(cpu[baseline])
    print(
        f"\n{what}: backend CPU per call, median [min-max] of {args.rounds} rounds,"
        f" {args.calls} calls each"
    )
    for label, values in cpu.items():
        median = statistics.median(values)
        print(
            f"  {label:<34} {median:7.1f} us [{min(values):.1f}-{max(values):.1f}]"
            f"  x{median / base:.2f}"
        )


GUARD_VARIANTS = {
    "UPDATE, unmanaged table": [],
    "UPDATE, managed table": None,
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
    pid = conn.info.backend_pid
    cpu: dict[str, list[float]] = {label: [] for label in tables}
    for round_no in range(args.rounds + 1):
        conn.execute("vacuum (analyze)")
        labels = list(tables)
        shift = round_no % len(labels)
        for label in labels[shift:] + labels[:shift]:
            before = backend_cpu_ns(pid)
            for key in range(1, args.calls + 1):
                conn.execute(tables[label], (key,))
            if round_no:
                cpu[label].append((backend_cpu_ns(pid) - before) / args.calls / 1e3)
    report("plain write, no claims", cpu, "UPDATE, unmanaged table", args)


if __name__ == "__main__":
    main()
