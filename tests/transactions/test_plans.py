"""Claims are looked up by key, whatever the planner believed when the
session planned the lookup.

A session plans the generated functions' statements once. An image table
is usually empty between transactions (vacuumed, so the planner believes
it), and a lookup planned then as a sequential scan (or through the index
on the transaction) read every image on every later statement: per-call
cost grew with the size of every open transaction, for as long as the
session lived. The image table's own scan counters are the oracle here:
after a warm-up, hundreds of captured statements, locks and guarded plain
writes must not scan it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

CALLS = 200


def image_stats(conn: psycopg.Connection[Any], image: str) -> tuple[int, int, int]:
    """(sequential scans, index scans, rows inserted) of the image table, as
    the statistics system has them."""
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select coalesce(seq_scan, 0), coalesce(idx_scan, 0), coalesce(n_tup_ins, 0)"
        " from pg_stat_user_tables where relid = %s::regclass",
        (image,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def settled(
    conn: psycopg.Connection[Any], image: str, done: Callable[[tuple[int, int, int]], bool]
) -> tuple[int, int, int]:
    """The image table's statistics once `done` holds for them (a session
    reports its counts when it ends, a little later on PostgreSQL 14)."""
    deadline = time.monotonic() + 10
    while True:
        stats = image_stats(conn, image)
        if done(stats):
            return stats
        assert time.monotonic() < deadline, f"statistics of {image} never settled: {stats}"
        time.sleep(0.1)


def test_a_long_transaction_never_scans_its_images(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("create table ledger (id bigint primary key, v int not null)")
    conn.execute("insert into ledger select g, 0 from generate_series(1, %s) g", (CALLS,))
    conn.execute("create table events (id bigint primary key, v int not null)")
    for table in ("ledger", "events"):
        conn.execute("select resilience.manage_table(%s)", (table,))
    images = dict(
        conn.execute(  # type: ignore[arg-type]
            "select relation::text, image_table::text from resilience.managed_tables"
        ).fetchall()
    )
    conn.execute("vacuum (analyze)")  # the image tables are empty: so the planner believes
    before = {t: image_stats(conn, images[t]) for t in images}

    with psycopg.connect(dsn, autocommit=True) as session:
        tx = session.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        for key in range(1, CALLS + 1):
            session.execute(
                "select resilience.tx_execute(%s, 'events', 'insert', %s)",
                (tx, Jsonb({"id": key, "v": key})),
            )
            session.execute(
                "select resilience.tx_execute(%s, 'ledger', 'lock', match => %s)",
                (tx, Jsonb({"id": key})),
            )
        # The same rows again: each lookup now finds this transaction's claim.
        for key in range(1, CALLS + 1):
            session.execute(
                "select resilience.tx_execute(%s, 'events', 'update', %s, %s)",
                (tx, Jsonb({"v": -key}), Jsonb({"id": key})),
            )
    # Warm-up statements may scan (custom plans of a tiny table); the
    # hundreds after them must not.
    for table in ("events", "ledger"):
        inserted = before[table][2] + (2 * CALLS if table == "events" else CALLS)
        scans = settled(conn, images[table], lambda s, n=inserted: s[2] >= n)[0] - before[table][0]
        assert scans < 20, f"{table}: {scans} sequential scans of its images"


def test_plain_writes_beside_many_claims_never_scan_the_images(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute("create table stock (id bigint primary key, v int not null)")
    conn.execute("insert into stock select g, 0 from generate_series(1, %s) g", (2 * CALLS,))
    conn.execute("select resilience.manage_table('stock')")
    image = conn.execute(
        "select image_table::text from resilience.managed_tables where relation = 'stock'::regclass"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("vacuum (analyze)")
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(dsn, autocommit=True) as writer:
        # The guard's lookups get planned while the table holds one claim...
        conn.execute(
            "select resilience.tx_execute(%s, 'stock', 'lock', match => %s)",
            (tx, Jsonb({"id": 1})),
        )
        for key in range(CALLS + 1, CALLS + 11):
            writer.execute("update stock set v = v + 1 where id = %s", (key,))
        for key in range(2, CALLS + 1):
            conn.execute(
                "select resilience.tx_execute(%s, 'stock', 'lock', match => %s)",
                (tx, Jsonb({"id": key})),
            )
        # ... and run while it holds many: each probes the claim index.
        for key in range(CALLS + 11, 2 * CALLS + 1):
            writer.execute("update stock set v = v + 1 where id = %s", (key,))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            writer.execute("update stock set v = v + 1 where id = 1")
        before = image_stats(conn, image)
    # The writer's session ended: its statistics come in.
    # (each guarded write looks its keys up once, by scan or by index)
    after = settled(conn, image, lambda s: s[0] + s[1] >= before[0] + before[1] + CALLS - 10)
    assert after[0] - before[0] < 20, f"{after[0] - before[0]} sequential scans by plain writes"


def test_a_rollback_never_scans_the_images_step_by_step(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """A rollback undoes one statement per step, each through its
    (tx_id, seq) images: a session whose plans were made on small rollbacks
    must not scan every image at every step of a long one."""
    conn.execute("create table ledger (id bigint primary key, v int not null)")
    conn.execute("insert into ledger select g, 0 from generate_series(1, %s) g", (CALLS,))
    conn.execute("select resilience.manage_table('ledger')")
    image = conn.execute(
        "select image_table::text from resilience.managed_tables"
        " where relation = 'ledger'::regclass"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("vacuum (analyze)")

    def updates_then_rollback(session: psycopg.Connection[Any], count: int) -> None:
        tx = session.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        for key in range(1, count + 1):
            session.execute(
                "select resilience.tx_execute(%s, 'ledger', 'update', %s, %s)",
                (tx, Jsonb({"v": key}), Jsonb({"id": key})),
            )
        session.execute("select resilience.tx_rollback(%s)", (tx,))

    with psycopg.connect(dsn, autocommit=True) as session:
        for _ in range(8):  # small rollbacks: the undo's plans get made here
            updates_then_rollback(session, 3)
        before = image_stats(conn, image)
        updates_then_rollback(session, CALLS)
    after = settled(conn, image, lambda s: s[2] >= before[2] + CALLS)
    assert after[0] - before[0] < 20, f"{after[0] - before[0]} sequential scans of the images"
    assert conn.execute("select count(*) from ledger where v <> 0").fetchone() == (0,)


@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_capture_leaves_the_callers_enable_seqscan_as_it_was(
    conn: psycopg.Connection[Any], setting: str
) -> None:
    """The capture turns sequential scans off while it looks claims up; the
    writer's own setting holds again after each kind of write, in the same
    database transaction: captured, plain beside claims, plain with none,
    and one refused by a claim (caught by the writer's savepoint)."""
    conn.execute("create table stock (id bigint primary key, v int not null)")
    conn.execute("create table spare (id bigint primary key, v int not null)")
    conn.execute("insert into stock select g, 0 from generate_series(1, 3) g")
    conn.execute("insert into spare select g, 0 from generate_series(1, 3) g")
    for table in ("stock", "spare"):
        conn.execute("select resilience.manage_table(%s)", (table,))
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    conn.execute(
        "select resilience.tx_execute(%s, 'stock', 'update', %s, %s)",
        (tx, Jsonb({"v": 1}), Jsonb({"id": 1})),
    )
    writes = [
        ("select resilience.tx_execute(%s, 'stock', 'insert', %s)", (tx, Jsonb({"id": 9, "v": 0}))),
        ("update stock set v = v + 1 where id = 2", None),
        ("update spare set v = v + 1 where id = 2", None),
    ]
    with conn.transaction():
        conn.execute("select set_config('enable_seqscan', %s, true)", (setting,))
        for statement, params in writes:
            conn.execute(statement, params)
            assert conn.execute("show enable_seqscan").fetchone() == (setting,)
        with pytest.raises(psycopg.errors.LockNotAvailable), conn.transaction():
            conn.execute("update stock set v = v + 1 where id = 1")
        assert conn.execute("show enable_seqscan").fetchone() == (setting,)
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
