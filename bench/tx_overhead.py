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

Floors (printed after the targets, marked "(floor)", no verdict): what the
contract (../shared/DESIGN.md section 1) mandates costs at the very least,
measured in the same rounds on bench-local tables with none of our code:
(a) tx_execute's signature (a table NAME and jsonb data) means a function
    that runs a dynamic INSERT (PL/pgSQL plans EXECUTE on every call): such a
    function alone, capturing nothing; then the same with a trigger writing
    one image row and one claim row, and nothing else (no transaction check,
    no audit);
(b) per written row a restore point with before- and after-image and a
    claim: a trigger writing exactly those two indexed rows per row, nothing
    else;
(d) and claims_overhead.py: a statement-level trigger that does nothing but
    declare transition tables, as the mandated capture triggers do.

Usage: python bench/tx_overhead.py [--quick]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import scratch_database, server

SCHEMA = """
create table {t} (id bigint primary key, grp int not null, v int not null, note text not null);
"""


# Bench-local objects for the floors: user objects of this benchmark in the
# scratch database, not part of the package.

# The (d) floor's and claims_overhead's floor's trigger function: does nothing.
EMPTY_TRIGGER_FUNCTION = """
    create function floor_empty() returns trigger language plpgsql as $$
    begin
        return null;
    end $$
    """

FLOOR_OBJECTS = (
    "create sequence floor_seq",
    "create table floor_images (seq bigint, rn bigint, after jsonb, primary key (seq, rn))",
    "create table floor_images2 (seq bigint, rn bigint, before jsonb, after jsonb,"
    " primary key (seq, rn))",
    "create table floor_claims (relation oid, key_hash bigint, tx_id uuid,"
    " primary key (relation, key_hash))",
    # (a) floor: one image row + one claim row per inserted row, nothing else.
    """
    create function floor_insert_capture() returns trigger language plpgsql as $$
    declare
        s bigint := nextval('floor_seq');
    begin
        insert into floor_images (seq, rn, after)
        select s, u.rn, u.img
        from unnest(array(select to_jsonb(x) from n x)) with ordinality as u(img, rn);
        insert into floor_claims (relation, key_hash, tx_id)
        select tg_relid, jsonb_hash_extended(jsonb_build_object('id', x.id), 0),
               '00000000-0000-0000-0000-00000000f100'::uuid  -- a fixed tx_id
        from n x;
        return null;
    end $$
    """,
    # (b) floor: per updated row one restore point (before + after image)
    # and one claim, nothing else.
    """
    create function floor_update_capture() returns trigger language plpgsql as $$
    declare
        s bigint := nextval('floor_seq');
    begin
        insert into floor_images2 (seq, rn, before, after)
        select s, u.rn, u.old_img, u.new_img
        from rows from (
            unnest(array(select to_jsonb(x) from o x)),
            unnest(array(select to_jsonb(y) from n y))
        ) with ordinality as u(old_img, new_img, rn);
        insert into floor_claims (relation, key_hash, tx_id)
        select tg_relid, jsonb_hash_extended(jsonb_build_object('id', y.id), 0),
               '00000000-0000-0000-0000-00000000f100'::uuid
        from n y;
        return null;
    end $$
    """,
    # (a) floor: the least a function taking a table name and jsonb data must
    # do to insert it: name the given columns, EXECUTE, return the row.
    """
    create function floor_execute(table_name text, data jsonb) returns jsonb
    language plpgsql as $$
    declare
        columns text := (select string_agg(format('%I', k), ', ') from jsonb_object_keys(data) k);
        result jsonb;
    begin
        execute format(
            'insert into %I (%s) select %s from jsonb_populate_record(null::%I, $1) as r'
            ' returning to_jsonb(%I)', table_name, columns, columns, table_name, table_name)
        into result using data;
        return result;
    end $$
    """,
    EMPTY_TRIGGER_FUNCTION,
)


def make_floor_objects(conn: psycopg.Connection[Any]) -> None:
    """The floor side tables and trigger functions (bench-local user objects)."""
    for statement in FLOOR_OBJECTS:
        conn.execute(statement)


def floor_trigger(
    conn: psycopg.Connection[Any],
    table: str,
    event: Literal["insert", "update"],
    function: str = "floor_empty",
    referencing: str | None = None,
) -> None:
    """A statement-level AFTER trigger on table declaring transition tables
    (by default, insert: new table as n; update: old table as o new table as n)."""
    if referencing is None:
        referencing = "new table as n" if event == "insert" else "old table as o new table as n"
    conn.execute(
        sql.SQL(
            "create trigger {} after {} on {} referencing {}"
            " for each statement execute function {}()"
        ).format(
            sql.Identifier(f"{table}_floor"),
            sql.SQL(event),
            sql.Identifier(table),
            sql.SQL(referencing),
            sql.Identifier(function),
        )
    )


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
        ("floor_t", False),
        ("bulk_floor", False),
    ):
        conn.execute(sql.SQL(SCHEMA.format(t="{}")).format(sql.Identifier(t)))
        if managed:
            conn.execute("select resilience.manage_table(%s)", (t,))
    make_floor_objects(conn)
    # (b) floor: images + claims only; (d) floor: empty trigger, new table as n.
    floor_trigger(conn, "floor_t", "update", "floor_update_capture")
    floor_trigger(conn, "bulk_floor", "insert")
    for t in ("plain_t", "managed_t", "floor_t"):
        conn.execute(
            sql.SQL(
                "insert into {} select g, 1, 0, 'row ' || g from generate_series(1, %s) g"
            ).format(sql.Identifier(t)),
            (rows,),
        )
    conn.execute("vacuum analyze")


def single_row_inserts(
    conn: psycopg.Connection[Any], n: int, rounds: int
) -> tuple[float, float, float, float]:
    """Medians per INSERT of: plain; through tx_execute; the (a) floors
    (the generic insert function without capture, then with the minimal
    capture trigger)."""
    for t in ("ins_plain", "ins_managed", "ins_generic", "ins_floor"):
        conn.execute(
            sql.SQL(
                "create table {} (id bigint generated always as identity primary key, name text)"
            ).format(sql.Identifier(t))
        )
    conn.execute("select resilience.manage_table('ins_managed')")
    # (a) floor: the trigger writes one image row + one claim row, nothing else.
    floor_trigger(conn, "ins_floor", "insert", "floor_insert_capture")
    tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
    payload = Jsonb({"name": "someone"})
    plain: list[float] = []
    managed: list[float] = []
    generic: list[float] = []
    floor: list[float] = []

    def plain_block() -> None:
        for _ in range(n):
            conn.execute("insert into ins_plain (name) values (%s)", ("someone",))

    def managed_block() -> None:
        for _ in range(n):
            conn.execute(
                "select resilience.tx_execute(%s, 'ins_managed', 'insert', %s)", (tx, payload)
            )

    def generic_block() -> None:
        for _ in range(n):
            conn.execute("select floor_execute('ins_generic', %s)", (payload,))

    def floor_block() -> None:
        for _ in range(n):
            conn.execute("select floor_execute('ins_floor', %s)", (payload,))

    # warm up (plans, caches)
    plain_block()
    managed_block()
    generic_block()
    floor_block()
    for _ in range(rounds):
        plain.append(timed(plain_block) / n)
        managed.append(timed(managed_block) / n)
        generic.append(timed(generic_block) / n)
        floor.append(timed(floor_block) / n)
    conn.execute("select resilience.tx_commit(%s)", (tx,))
    return (
        statistics.median(plain),
        statistics.median(managed),
        statistics.median(generic),
        statistics.median(floor),
    )


def big_update(conn: psycopg.Connection[Any], rounds: int) -> dict[str, float]:
    """Medians of: the unmanaged update; the same UPDATE statement on the
    managed table inside a logical transaction (setting resilience.tx_id, as
    tx_execute does internally: the difference is capture + claims only);
    the same update through tx_execute (which also returns every updated row
    as JSON); the rollback of the captured update; and the (b) floor (the
    update on floor_t, whose trigger only writes images and claims)."""
    timings: dict[str, list[float]] = {
        "forward": [],
        "floor": [],
        "captured": [],
        "execute": [],
        "rollback": [],
    }
    for value in range(1, rounds + 1):

        def forward(v: int = value) -> None:
            conn.execute("update plain_t set v = %s where grp = 1", (v,))

        def floor(v: int = value) -> None:
            conn.execute("update floor_t set v = %s where grp = 1", (v,))

        timings["forward"].append(timed(forward))
        conn.execute("truncate floor_images2, floor_claims")  # outside the timed part
        timings["floor"].append(timed(floor))
        tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]

        def captured(v: int = value, tx: Any = tx) -> None:
            with conn.transaction():
                conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
                conn.execute("update managed_t set v = %s where grp = 1", (v,))

        def rollback(tx: Any = tx) -> None:
            conn.execute("select resilience.tx_rollback(%s)", (tx,))

        timings["captured"].append(timed(captured))
        timings["rollback"].append(timed(rollback))
        tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]

        def execute(v: int = value, tx: Any = tx) -> None:
            conn.execute(
                "select resilience.tx_execute(%s, 'managed_t', 'update', %s, %s)",
                (tx, Jsonb({"v": v}), Jsonb({"grp": 1})),
            )

        timings["execute"].append(timed(execute))
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    return {name: statistics.median(values) for name, values in timings.items()}


def bulk_insert(
    conn: psycopg.Connection[Any], rows: int, rounds: int
) -> tuple[float, float, float]:
    """Medians of the bulk insert into: bulk_plain; bulk_managed; the (d)
    floor bulk_floor (an empty trigger declaring a transition table)."""
    plain: list[float] = []
    managed: list[float] = []
    floor: list[float] = []
    statement = "insert into {} select g, 1, g, 'row ' || g from generate_series(1, %s) g"
    for _ in range(rounds + 1):
        for t, sink in (("bulk_plain", plain), ("bulk_managed", managed), ("bulk_floor", floor)):
            conn.execute(sql.SQL("truncate {}").format(sql.Identifier(t)))

            def insert(t: str = t) -> None:
                conn.execute(sql.SQL(statement).format(sql.Identifier(t)), (rows,))

            sink.append(timed(insert))
    return (
        statistics.median(plain[1:]),
        statistics.median(managed[1:]),
        statistics.median(floor[1:]),
    )


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
        plain, managed, generic, insert_floor = single_row_inserts(conn, n, rounds)
        update = big_update(conn, big_rounds)
        bulk_plain, bulk_managed, bulk_floor = bulk_insert(conn, rows, big_rounds)
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
    # What the contract's design costs at the very least: floors, no verdict.
    floors = [
        ("(a) floor: generic insert function, no capture", plain * 1e6, generic * 1e6, "us"),
        ("(a) floor: the same + 1 image row + 1 claim row", plain * 1e6, insert_floor * 1e6, "us"),
        (
            "(b) floor: UPDATE + 1 restore point + 1 claim/row",
            forward * 1e3,
            update["floor"] * 1e3,
            "ms",
        ),
        (
            "(d) floor: EMPTY trigger with a transition table",
            bulk_plain * 1e3,
            bulk_floor * 1e3,
            "ms",
        ),
    ]
    for label, base, ours, unit in floors:
        print(
            f"  {label:<52} {base:9.2f} {unit} -> {ours:9.2f} {unit}  ratio {ours / base:5.2f}"
            "  (floor)"
        )


if __name__ == "__main__":
    main()
