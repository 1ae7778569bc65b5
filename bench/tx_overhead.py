"""What logical transactions cost, measured side by side in one run (issue 11).

Targets (median of the per-round wall-time ratio; the serving backend's
CPU-time ratio, from /proc/<pid>/schedstat, printed beside it):
(a)  tx_execute single-row insert vs a plain single-row INSERT, each its own
     autocommit call: <= 2.0;
(a2) the same INSERT sent as PostgREST sends it in header mode (a database
     transaction: set_config of request.jwt.claims and request.headers with
     x-resilience-tx, then the INSERT) vs the plain INSERT: <= 1.6; also
     printed against the same PostgREST request without the header on an
     unmanaged table;
(b)  a 100,000-row UPDATE inside a logical transaction (header mode: the
     plain UPDATE statement, captured by the trigger) vs the same UPDATE on
     an unmanaged table: <= 2.0; (b') the same through tx_execute, which
     also returns every row as JSON, vs a plain UPDATE ... RETURNING the
     rows as JSON (no target);
(c)  that logical transaction's rollback vs the forward update: <= 2.0;
(d)  a 100,000-row bulk insert into a managed table outside any logical
     transaction vs an unmanaged table: <= 1.10;
(f)  tx_execute 'lock' of one row vs SELECT ... FOR UPDATE of it, each its
     own call: <= 2.0.
(e), the claim guard, is bench/claims_overhead.py.

Alternative designs (issue 11 item 3, bench/_designs.py), measured in the
same rounds on bench-local tables and marked "(floor)": for (a) a CASE
dispatcher over static per-table functions (and the same whose capture also
writes the journal and audit rows every captured statement writes) and a
dynamic-EXECUTE function, all with statement-level typed capture; for (a2) the PostgREST request
itself on an unmanaged table (four round trips: BEGIN, the set_config
select, the INSERT, COMMIT, where the plain INSERT is one), then
statement-level typed capture and row-level capture, both against that
request; for (b)/(c) typed images whose row is the
claim, and jsonb images with a claims table; for (d) an empty trigger
declaring the transition table and a row-level trigger with a WHEN test;
for (f) one function locking and claiming, and the same writing the
journal and audit rows every captured statement writes.

Designs that keep the whole contract (marked "(design)"), over tables the
package manages, in the same rounds: for (a) tx_execute on a twin table
whose registry entry lacks the generated insert function (the statement
built and planned per call, as every insert ran before it), a static
per-table insert function (tx_execute's preparation, then the INSERT:
plan cached, no dispatch, no statement building) whose write the
package's own capture trigger captures; for (f) one SECURITY DEFINER
function per table doing everything the lock by primary key does (lazy
reap probe, the check by role and JWT subject, the owner's privileges, the
claimed-tables row, FOR UPDATE NOWAIT with the image row that is the claim,
journal and audit; it cannot apply the caller's RLS) and the table's
generated lock by key behind tx_execute's preparation (the lazy
reap probe, the transaction check, the registry read), called by name:
tx_execute's lock without its dispatch. The generated lock by key called
alone (no preparation: the transaction is checked after the rows are
locked) is a floor.

Designs that keep the contract of a captured write on bench-local tables
(marked "(design)"; what they leave out is named in bench/_designs.py:
the JWT subject, a reaper, privilege separation...; statement-level
capture over the transition tables and row-level capture, both with typed images whose
first row per key is the claim, key changes claiming the old key, journal
and audit rows per statement, a LIFO undo by statement that restores only
rows still as written, all or nothing; tests/transactions/
test_bench_contract_designs.py checks them against a real ROLLBACK), and
the statement-level one with privilege separation (its capture and undo
run as the owner of the images, SECURITY DEFINER with a pinned search
path, and take the owner by the caller's role and JWT subject): for
(a) a CASE dispatcher + static insert function over each of the three;
for (a2) the header-mode INSERT into each; for (f) a lock function (FOR
UPDATE NOWAIT, then the claim, journal and audit rows), the same with the
owner's JWT subject, a lazy reap probe and the claim written by a
SECURITY DEFINER function (handed the locked row), the privilege-separated
lock behind a CASE dispatcher with tx_execute's signature whose SECURITY
DEFINER claim is handed only the row's (tableoid, ctid) and reads it
itself, and FOR UPDATE NOWAIT followed by a no-op UPDATE that the
statement-level capture takes;
for (b) and (c) the UPDATE and the undo of each; for (d) the bulk insert
into each. Each (b)/(c) variant has its own table, so every table takes
the same writes per round.

Every round starts with VACUUM (ANALYZE), runs every variant once in an
order rotated per round; one warm-up round is discarded. Two table shapes:
4 columns (id bigint pk, grp int, v int, note text) and 6 (+ numeric,
timestamptz).

Usage: python bench/tx_overhead.py [--quick] [--rounds N]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import _designs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import Rounds, Timer, ratio_line, scratch_database, server

# name -> (column definitions, columns, the generate_series expression per column)
SHAPES: dict[str, tuple[str, list[str], str]] = {
    "4 columns": (
        "id bigint primary key, grp int not null, v int not null, note text not null",
        ["id", "grp", "v", "note"],
        "g, 1, 0, 'row ' || g",
    ),
    "6 columns": (
        "id bigint primary key, grp int not null, v int not null, note text not null,"
        " amount numeric not null, at timestamptz not null",
        ["id", "grp", "v", "note", "amount", "at"],
        "g, 1, 0, 'row ' || g, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 second'",
    ),
}

CLAIMS = json.dumps({"role": "postgres"})  # what PostgREST sets (no sub: as tx_begin saw)


@contextmanager
def database() -> Iterator[str]:
    """A fresh database with pgresilience installed, dropped afterwards."""
    with server() as admin_dsn, scratch_database(admin_dsn) as dsn:
        yield dsn


def vacuum(conn: psycopg.Connection[Any]) -> Callable[[], None]:
    return lambda: conn.execute("vacuum (analyze)")


def create(conn: psycopg.Connection[Any], table: str, shape: str, rows: int = 0) -> None:
    definition, _, series = SHAPES[shape]
    name = sql.Identifier(table)
    conn.execute(sql.SQL("create table {} ({})").format(name, sql.SQL(definition)))
    if rows:
        conn.execute(
            sql.SQL("insert into {} select {} from generate_series(1, %s) g").format(
                name, sql.SQL(series)
            ),
            (rows,),
        )


def row_of(shape: str, key: int) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key, "grp": 1, "v": 0, "note": f"row {key}"}
    if shape == "6 columns":
        row |= {"amount": "12.50", "at": "2026-01-01T00:00:00+00:00"}
    return row


def tx_begin(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("select resilience.tx_begin(86400000)").fetchone()
    assert row is not None
    return row[0]


def postgrest(
    conn: psycopg.Connection[Any], headers: dict[str, str], statement: Any, args: Any
) -> None:
    """One request as PostgREST sends it: a transaction setting the request
    context (transaction-local), then the statement."""
    with conn.transaction():
        conn.execute(
            "select set_config('request.jwt.claims', %s, true),"
            " set_config('request.method', 'POST', true),"
            " set_config('request.headers', %s, true)",
            (CLAIMS, json.dumps(headers)),
        )
        conn.execute(statement, args)


def single_row(conn: psycopg.Connection[Any], shape: str, n: int, rounds: int) -> Rounds:
    """(a), (a2), (f) and their alternative designs: n calls per variant."""
    s = "4" if shape == "4 columns" else "6"
    _, columns, _ = SHAPES[shape]
    for t in (
        "ins_plain",
        "ins_managed",
        "ins_general",
        "ins_contract",
        "ins_static",
        "ins_recorded",
        "ins_dynamic",
        "ins_row",
        "ins_whole_statement",
        "ins_whole_row",
        "ins_separated",
    ):
        create(conn, f"{t}_{s}", shape)
    create(conn, f"lk_{s}", shape, rows=n)
    for t in ("lk_claim", "lk_update", "lk_full"):
        create(conn, f"{t}_{s}", shape, rows=n)
        _designs.contract_statement(conn, f"{t}_{s}", columns)
    create(conn, f"lk_separated_{s}", shape, rows=n)
    _designs.contract_separated(conn, f"lk_separated_{s}", columns)
    lock_claim, _ = _designs.contract_locks(conn, f"lk_claim_{s}")
    _, lock_update = _designs.contract_locks(conn, f"lk_update_{s}")
    lock_full = _designs.contract_lock_full(conn, f"lk_full_{s}")
    lock_separated = _designs.contract_lock_separated(conn, f"lk_separated_{s}")
    for t in (f"ins_managed_{s}", f"ins_general_{s}", f"ins_contract_{s}", f"lk_{s}"):
        conn.execute("select resilience.manage_table(%s)", (t,))
    # tx_execute as it was before the generated insert function (the
    # statement built and planned per call): the registry entry without it.
    conn.execute(
        "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
        " where relation = %s::regclass",
        (f"ins_general_{s}",),
    )
    for t in (f"ins_static_{s}", f"ins_dynamic_{s}"):
        _designs.typed_image(conn, t, columns)
    _designs.typed_image(conn, f"ins_recorded_{s}", columns, recorded=True)
    _designs.row_level(conn, f"ins_row_{s}", "insert")
    _designs.contract_statement(conn, f"ins_whole_statement_{s}", columns)
    _designs.contract_row(conn, f"ins_whole_row_{s}", columns)
    _designs.contract_separated(conn, f"ins_separated_{s}", columns)
    dispatch_whole = _designs.static_insert(conn, f"ins_whole_statement_{s}")
    dispatch_separated = _designs.static_insert(conn, f"ins_separated_{s}")
    dispatch_whole_row = _designs.static_insert(conn, f"ins_whole_row_{s}")
    dispatch = _designs.static_insert(conn, f"ins_static_{s}")
    dispatch_recorded = _designs.static_insert(conn, f"ins_recorded_{s}")
    lock_fn = _designs.lock_function(conn, f"lk_{s}")
    lock_recorded_fn = _designs.lock_function(conn, f"lk_{s}", recorded=True)
    contract_insert = _designs.contract_insert(conn, f"ins_contract_{s}")
    contract_lock = _designs.contract_lock(conn, f"lk_{s}", columns)
    lock_by_key = _designs.lock_by_key(conn, f"lk_{s}")
    contract_lock_by_key = _designs.contract_lock_by_key(conn, f"lk_{s}")
    keys = itertools.count(1)
    ins = {
        t: sql.SQL("insert into {} ({}) values ({})").format(
            sql.Identifier(f"{t}_{s}"),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        for t in (
            "ins_plain",
            "ins_managed",
            "ins_static",
            "ins_row",
            "ins_whole_statement",
            "ins_whole_row",
            "ins_separated",
        )
    }

    def values(key: int) -> list[Any]:
        return list(row_of(shape, key).values())

    def plain(timer: Timer) -> None:
        timer(
            "plain", lambda: [conn.execute(ins["ins_plain"], values(next(keys))) for _ in range(n)]
        )

    def tx_execute_insert(name: str, table: str) -> Callable[[Timer], None]:
        """n tx_execute inserts into `table` in one logical transaction."""

        def variant(timer: Timer) -> None:
            tx = tx_begin(conn)
            timer(
                name,
                lambda: [
                    conn.execute(
                        "select resilience.tx_execute(%s, %s, 'insert', %s)",
                        (tx, table, Jsonb(row_of(shape, next(keys)))),
                    )
                    for _ in range(n)
                ],
            )
            conn.execute("select resilience.tx_commit(%s)", (tx,))

        return variant

    def pgrst_plain(timer: Timer) -> None:
        timer(
            "pgrst_plain",
            lambda: [postgrest(conn, {}, ins["ins_plain"], values(next(keys))) for _ in range(n)],
        )

    def pgrst_header(timer: Timer) -> None:
        tx = tx_begin(conn)
        header = {"x-resilience-tx": str(tx)}
        timer(
            "pgrst_header",
            lambda: [
                postgrest(conn, header, ins["ins_managed"], values(next(keys))) for _ in range(n)
            ],
        )
        conn.execute("select resilience.tx_commit(%s)", (tx,))

    def for_update(timer: Timer) -> None:
        timer(
            "for_update",
            lambda: [
                conn.execute(
                    sql.SQL("select * from {} where id = %s for update").format(
                        sql.Identifier(f"lk_{s}")
                    ),
                    (i,),
                )
                for i in range(1, n + 1)
            ],
        )

    def lock(timer: Timer) -> None:
        tx = tx_begin(conn)
        timer(
            "lock",
            lambda: [
                conn.execute(
                    "select resilience.tx_execute(%s, %s, 'lock', match => %s)",
                    (tx, f"lk_{s}", Jsonb({"id": i})),
                )
                for i in range(1, n + 1)
            ],
        )
        conn.execute("select resilience.tx_commit(%s)", (tx,))

    def floor_tx(name: str, body: Callable[[Any], None], image: str) -> Callable[[Timer], None]:
        def variant(timer: Timer) -> None:
            tx = _designs.new_floor_tx(conn)
            timer(name, lambda: body(tx))
            # commit: release the claims, drop the journal (outside the timed part)
            conn.execute(
                sql.SQL("delete from {} where tx = %s").format(sql.Identifier(image)), (tx,)
            )
            conn.execute("delete from floor_journal where tx = %s", (tx,))

        return variant

    def dispatched(dispatcher: str, table: str) -> Callable[[Any], None]:
        """n single-row inserts into `table` through the CASE dispatcher."""

        def body(tx: Any) -> None:
            for _ in range(n):
                conn.execute(
                    sql.SQL("select {}(%s, %s, 'insert', %s)").format(sql.Identifier(dispatcher)),
                    (tx, f"{table}_{s}", Jsonb(row_of(shape, next(keys)))),
                )

        return body

    def dynamic(tx: Any) -> None:
        for _ in range(n):
            conn.execute(
                "select floor_dynamic_execute(%s, %s, %s)",
                (tx, f"ins_dynamic_{s}", Jsonb(row_of(shape, next(keys)))),
            )

    def pgrst_into(table: str) -> Callable[[Any], None]:
        """n header-mode INSERTs into `table`, as PostgREST sends them."""

        def body(tx: Any) -> None:
            header = {"x-resilience-tx": str(tx)}
            for _ in range(n):
                postgrest(conn, header, ins[table], values(next(keys)))

        return body

    def locks_by_id(fn: str) -> Callable[[Any], None]:
        """n calls of the lock function `fn` (tx, id), one row each."""

        def body(tx: Any) -> None:
            for i in range(1, n + 1):
                conn.execute(sql.SQL("select {}(%s, %s)").format(sql.Identifier(fn)), (tx, i))

        return body

    def dispatched_lock(dispatcher: str, table: str) -> Callable[[Any], None]:
        """n locks of one row each through the CASE dispatcher `dispatcher`
        with tx_execute's signature."""

        def body(tx: Any) -> None:
            for i in range(1, n + 1):
                conn.execute(
                    sql.SQL("select {}(%s, %s, 'lock', null, %s)").format(
                        sql.Identifier(dispatcher)
                    ),
                    (tx, f"{table}_{s}", Jsonb({"id": i})),
                )

        return body

    def in_logical_tx(name: str, body: Callable[[Any], None]) -> Callable[[Timer], None]:
        """A contract-keeping design: its calls in one logical transaction of
        the package's, committed after the timed part."""

        def variant(timer: Timer) -> None:
            tx = tx_begin(conn)
            timer(name, lambda: body(tx))
            conn.execute("select resilience.tx_commit(%s)", (tx,))

        return variant

    def contract_static_insert(tx: Any) -> None:
        for _ in range(n):
            conn.execute(
                sql.SQL("select {}(%s, %s)").format(sql.SQL(contract_insert)),
                (tx, Jsonb(row_of(shape, next(keys)))),
            )

    def locks_by(fn: str) -> Callable[[Any], None]:
        """n calls of the lock function `fn` (tx, match), one row each."""

        def body(tx: Any) -> None:
            for i in range(1, n + 1):
                conn.execute(
                    sql.SQL("select * from {}(%s, %s)").format(sql.SQL(fn)),
                    (tx, Jsonb({"id": i})),
                )

        return body

    variants = {
        "plain": plain,
        "tx_execute": tx_execute_insert("tx_execute", f"ins_managed_{s}"),
        "tx_execute_general": tx_execute_insert("tx_execute_general", f"ins_general_{s}"),
        "pgrst_plain": pgrst_plain,
        "pgrst_header": pgrst_header,
        "for_update": for_update,
        "lock": lock,
        "static": floor_tx("static", dispatched(dispatch, "ins_static"), f"ins_static_{s}_img"),
        "static_recorded": floor_tx(
            "static_recorded",
            dispatched(dispatch_recorded, "ins_recorded"),
            f"ins_recorded_{s}_img",
        ),
        "dynamic": floor_tx("dynamic", dynamic, f"ins_dynamic_{s}_img"),
        "pgrst_typed": floor_tx("pgrst_typed", pgrst_into("ins_static"), f"ins_static_{s}_img"),
        "pgrst_row": floor_tx("pgrst_row", pgrst_into("ins_row"), f"ins_row_{s}_img"),
        "static_whole": floor_tx(
            "static_whole",
            dispatched(dispatch_whole, "ins_whole_statement"),
            f"ins_whole_statement_{s}_img",
        ),
        "static_whole_row": floor_tx(
            "static_whole_row",
            dispatched(dispatch_whole_row, "ins_whole_row"),
            f"ins_whole_row_{s}_img",
        ),
        "lock_claim": floor_tx("lock_claim", locks_by_id(lock_claim), f"lk_claim_{s}_img"),
        "lock_update": floor_tx("lock_update", locks_by_id(lock_update), f"lk_update_{s}_img"),
        "lock_full": floor_tx("lock_full", locks_by_id(lock_full), f"lk_full_{s}_img"),
        "lock_separated": floor_tx(
            "lock_separated",
            dispatched_lock(lock_separated, "lk_separated"),
            f"lk_separated_{s}_img",
        ),
        "static_separated": floor_tx(
            "static_separated",
            dispatched(dispatch_separated, "ins_separated"),
            f"ins_separated_{s}_img",
        ),
        "pgrst_separated": floor_tx(
            "pgrst_separated", pgrst_into("ins_separated"), f"ins_separated_{s}_img"
        ),
        "pgrst_whole_statement": floor_tx(
            "pgrst_whole_statement",
            pgrst_into("ins_whole_statement"),
            f"ins_whole_statement_{s}_img",
        ),
        "pgrst_whole_row": floor_tx(
            "pgrst_whole_row", pgrst_into("ins_whole_row"), f"ins_whole_row_{s}_img"
        ),
        "floor_lock": floor_tx("floor_lock", locks_by_id(lock_fn), f"lk_{s}_lockimg"),
        "floor_lock_recorded": floor_tx(
            "floor_lock_recorded", locks_by_id(lock_recorded_fn), f"lk_{s}_lockimg"
        ),
        "contract_insert": in_logical_tx("contract_insert", contract_static_insert),
        "contract_lock": in_logical_tx("contract_lock", locks_by(contract_lock)),
        "lock_by_key": in_logical_tx("lock_by_key", locks_by(lock_by_key)),
        "contract_lock_by_key": in_logical_tx(
            "contract_lock_by_key", locks_by(contract_lock_by_key)
        ),
    }
    return Rounds(conn, variants, vacuum(conn), rounds=rounds).run()


def big_update(conn: psycopg.Connection[Any], shape: str, rows: int, rounds: int) -> Rounds:
    """(b), (b'), (c), the two floors and the two designs that keep the
    contract of a write."""
    s = "4" if shape == "4 columns" else "6"
    _, columns, _ = SHAPES[shape]
    # One table per variant, so that each table takes the same writes per
    # round (its update, and its undo where it has one).
    for t in (
        "up_plain",
        "up_returning",
        "up_managed",
        "up_executed",
        "up_typed",
        "up_jsonb",
        "up_statement",
        "up_row",
        "up_separated",
    ):
        create(conn, f"{t}_{s}", shape, rows=rows)
    for t in ("up_managed", "up_executed"):
        conn.execute("select resilience.manage_table(%s)", (f"{t}_{s}",))
    _designs.typed_image(conn, f"up_typed_{s}", columns)
    _designs.jsonb_image(conn, f"up_jsonb_{s}", columns)
    _designs.contract_statement(conn, f"up_statement_{s}", columns)
    _designs.contract_row(conn, f"up_row_{s}", columns)
    _designs.contract_separated(conn, f"up_separated_{s}", columns)
    values = itertools.count(1)

    def update(table: str) -> sql.Composed:
        return sql.SQL("update {} set v = %s where grp = 1").format(sql.Identifier(f"{table}_{s}"))

    def forward(timer: Timer) -> None:
        timer("forward", lambda: conn.execute(update("up_plain"), (next(values),)))

    def captured(timer: Timer) -> None:
        tx = tx_begin(conn)
        header = {"x-resilience-tx": str(tx)}
        timer("captured", lambda: postgrest(conn, header, update("up_managed"), (next(values),)))
        timer("rollback", lambda: conn.execute("select resilience.tx_rollback(%s)", (tx,)))

    def returning(timer: Timer) -> None:
        statement = sql.SQL(
            "with w as (update {} as t set v = %s where grp = 1 returning to_jsonb(t) as j)"
            " select coalesce(jsonb_agg(w.j), '[]'), count(*) from w"
        ).format(sql.Identifier(f"up_returning_{s}"))
        timer("returning", lambda: conn.execute(statement, (next(values),)).fetchall())

    def tx_execute(timer: Timer) -> None:
        tx = tx_begin(conn)
        timer(
            "tx_execute",
            lambda: conn.execute(
                "select resilience.tx_execute(%s, %s, 'update', %s, %s)",
                (tx, f"up_executed_{s}", Jsonb({"v": next(values)}), Jsonb({"grp": 1})),
            ).fetchall(),
        )
        conn.execute("select resilience.tx_rollback(%s)", (tx,))

    def design(name: str, undo: str | None = None) -> Callable[[Timer], None]:
        """A bench-local design's UPDATE and its undo (`undo`, by default the
        floor's own floor_undo_<table>)."""
        table = f"up_{name}_{s}"
        undo_fn = undo or f"floor_undo_{table}"

        def variant(timer: Timer) -> None:
            tx = _designs.new_floor_tx(conn)
            header = {"x-resilience-tx": str(tx)}
            timer(
                f"b_{name}", lambda: postgrest(conn, header, update(f"up_{name}"), (next(values),))
            )
            timer(
                f"c_{name}",
                lambda: conn.execute(
                    sql.SQL("select {}(%s)").format(sql.Identifier(undo_fn)), (tx,)
                ),
            )

        return variant

    variants = {
        "forward": forward,
        "captured": captured,
        "returning": returning,
        "tx_execute": tx_execute,
        "typed": design("typed"),
        "jsonb": design("jsonb"),
        "statement": design("statement", "floor_undo"),
        "row": design("row", "floor_undo"),
        "separated": design("separated", "floor_undo_separated"),
    }
    return Rounds(conn, variants, vacuum(conn), rounds=rounds).run()


def bulk_insert(conn: psycopg.Connection[Any], shape: str, rows: int, rounds: int) -> Rounds:
    """(d), two floors of a managed table's insert trigger and the two
    designs that keep the contract of a write."""
    s = "4" if shape == "4 columns" else "6"
    _, columns, series = SHAPES[shape]
    tables = (
        "bulk_plain",
        "bulk_managed",
        "bulk_empty",
        "bulk_when",
        "bulk_statement",
        "bulk_row",
        "bulk_separated",
    )
    for t in tables:
        create(conn, f"{t}_{s}", shape)
    conn.execute("select resilience.manage_table(%s)", (f"bulk_managed_{s}",))
    # The two designs that keep the contract of a captured write.
    _designs.contract_statement(conn, f"bulk_statement_{s}", columns)
    _designs.contract_row(conn, f"bulk_row_{s}", columns)
    _designs.contract_separated(conn, f"bulk_separated_{s}", columns)
    # The mandated design at its cheapest: an EMPTY statement-level trigger
    # declaring the transition table.
    _designs.run(
        conn,
        "create trigger {trg} after insert on {t} referencing new table as new_rows"
        " for each statement execute function floor_empty()",
        trg=f"bulk_empty_{s}_t",
        t=f"bulk_empty_{s}",
    )
    # Another design: a row-level trigger that fires only inside a logical
    # transaction or on a claimed table (tested per row, in WHEN).
    _designs.run(
        conn,
        "create trigger {trg} after insert on {t} for each row"
        " when (current_setting('floor.tx', true) > '' or current_setting('request.headers', true)"
        " like '%%x-resilience-tx%%') execute function floor_empty()",
        trg=f"bulk_when_{s}_t",
        t=f"bulk_when_{s}",
    )

    def variant(table: str) -> Callable[[Timer], None]:
        name = sql.Identifier(f"{table}_{s}")
        statement = sql.SQL("insert into {} select {} from generate_series(1, %s) g").format(
            name, sql.SQL(series)
        )

        def run(timer: Timer) -> None:
            conn.execute(sql.SQL("truncate {}").format(name))
            timer(table, lambda: conn.execute(statement, (rows,)))

        return run

    variants = {t: variant(t) for t in tables}
    return Rounds(conn, variants, vacuum(conn), rounds=rounds).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short run (smaller sizes, still 5 rounds)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds after the warm-up")
    args = parser.parse_args()
    rows = 20_000 if args.quick else 100_000
    n = 100 if args.quick else 300
    rounds = max(5, args.rounds or (5 if args.quick else 7))
    print(f"pgresilience logical transactions (rounds: {rounds} after 1 warm-up)")
    print("ratio: wall median [min-max], backend cpu median [min-max], (median times)")
    with database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        _designs.make_common(conn)
        for shape in SHAPES:
            one = single_row(conn, shape, n, rounds)
            big = big_update(conn, shape, rows, rounds)
            bulk = bulk_insert(conn, shape, rows, rounds)
            print(f"\n{shape}: {n} calls per variant per round; {rows:,}-row statements")
            for line in (
                ratio_line(
                    one, "(a) tx_execute insert vs plain INSERT", "tx_execute", "plain", 2.0, n
                ),
                ratio_line(
                    one,
                    "    tx_execute, statement built per call (before)",
                    "tx_execute_general",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    floor: CASE dispatcher + static fn, typed capture",
                    "static",
                    "plain",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: the same + journal and audit rows",
                    "static_recorded",
                    "plain",
                    None,
                    n,
                ),
                ratio_line(
                    one, "    floor: dynamic EXECUTE fn, typed capture", "dynamic", "plain", None, n
                ),
                ratio_line(
                    one,
                    "    whole contract: static per-table fn, our capture",
                    "contract_insert",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: CASE dispatcher + static fn, statement-level",
                    "static_whole",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: CASE dispatcher + static fn, row-level",
                    "static_whole_row",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: the same, privilege-separated",
                    "static_separated",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "(a2) PostgREST header-mode INSERT vs plain INSERT",
                    "pgrst_header",
                    "plain",
                    1.6,
                    n,
                ),
                ratio_line(
                    one,
                    "(a2') the same vs PostgREST INSERT, unmanaged table",
                    "pgrst_header",
                    "pgrst_plain",
                    1.6,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: the PostgREST request itself, unmanaged",
                    "pgrst_plain",
                    "plain",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: statement-level typed capture (vs a2')",
                    "pgrst_typed",
                    "pgrst_plain",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: row-level capture (vs a2')",
                    "pgrst_row",
                    "pgrst_plain",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    design: statement-level capture, contract of a write",
                    "pgrst_whole_statement",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: row-level capture, contract of a write",
                    "pgrst_whole_row",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: statement-level, privilege-separated",
                    "pgrst_separated",
                    "plain",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    f"(b) {rows:,}-row UPDATE in a logical tx vs unmanaged",
                    "captured",
                    "forward",
                    2.0,
                ),
                ratio_line(
                    big, "    floor: typed images, image row = claim", "b_typed", "forward", None
                ),
                ratio_line(
                    big, "    floor: jsonb images + claims table", "b_jsonb", "forward", None
                ),
                ratio_line(
                    big,
                    "    design: statement-level capture, contract of a write",
                    "b_statement",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    "    design: row-level capture, contract of a write",
                    "b_row",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    "    design: statement-level, privilege-separated",
                    "b_separated",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    "(b') through tx_execute vs UPDATE .. RETURNING json",
                    "tx_execute",
                    "returning",
                    None,
                    note="(no target)",
                ),
                ratio_line(
                    big, "(c) rollback of (b) vs the forward update", "rollback", "forward", 2.0
                ),
                ratio_line(
                    big, "    floor: typed images, set-based undo", "c_typed", "forward", None
                ),
                ratio_line(
                    big,
                    "    floor: jsonb images, jsonb_populate_record undo",
                    "c_jsonb",
                    "forward",
                    None,
                ),
                ratio_line(
                    big,
                    "    design: statement-level capture, LIFO undo by statement",
                    "c_statement",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    "    design: row-level capture, LIFO undo by statement",
                    "c_row",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    big,
                    "    design: statement-level, privilege-separated, its undo",
                    "c_separated",
                    "forward",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    bulk,
                    f"(d) bulk insert {rows:,} rows: managed vs unmanaged",
                    "bulk_managed",
                    "bulk_plain",
                    1.10,
                ),
                ratio_line(
                    bulk,
                    "    floor: EMPTY statement trigger + transition table",
                    "bulk_empty",
                    "bulk_plain",
                    None,
                ),
                ratio_line(
                    bulk,
                    "    floor: row-level trigger with a WHEN test",
                    "bulk_when",
                    "bulk_plain",
                    None,
                ),
                ratio_line(
                    bulk,
                    "    design: statement-level capture, contract of a write",
                    "bulk_statement",
                    "bulk_plain",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    bulk,
                    "    design: row-level capture, contract of a write",
                    "bulk_row",
                    "bulk_plain",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    bulk,
                    "    design: statement-level, privilege-separated",
                    "bulk_separated",
                    "bulk_plain",
                    None,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "(f) tx_execute lock of one row vs SELECT FOR UPDATE",
                    "lock",
                    "for_update",
                    2.0,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: one function: FOR UPDATE + claim",
                    "floor_lock",
                    "for_update",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    floor: the same + journal and audit rows",
                    "floor_lock_recorded",
                    "for_update",
                    None,
                    n,
                ),
                ratio_line(
                    one,
                    "    whole contract: one function (no RLS tables)",
                    "contract_lock",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    whole contract: prepare + lock by key, static",
                    "contract_lock_by_key",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: FOR UPDATE NOWAIT, then claim, journal, audit",
                    "lock_claim",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: the same, + JWT owner, reap probe, definer claim",
                    "lock_full",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: privilege-separated, re-read by ctid, generic call",
                    "lock_separated",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    design: FOR UPDATE NOWAIT, then a captured no-op UPDATE",
                    "lock_update",
                    "for_update",
                    None,
                    n,
                    note="(design)",
                ),
                ratio_line(
                    one,
                    "    floor: the generated lock by key alone",
                    "lock_by_key",
                    "for_update",
                    None,
                    n,
                ),
            ):
                print(line, flush=True)


if __name__ == "__main__":
    main()
