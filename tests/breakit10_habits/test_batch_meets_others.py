"""tx_run meeting other writers (docs/batch_and_security.md, "Meeting
others"): a batch's `lock` takes a row a logical transaction claimed as it
stands but cannot write it (55P03, nothing kept); two batches taking the same
rows in opposite orders deadlock like plain transactions, and the one that
fails (40P01, naming its operation) leaves nothing behind."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgresilience import DatabaseError, TransactionManager


def _update(row_id: int, note: str) -> dict[str, Any]:
    return {
        "table": "pairs",
        "operation": "update",
        "data": {"note": note},
        "match": {"id": row_id},
    }


@pytest.fixture
def pairs(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "create table pairs (id int primary key, note text not null);"
        " insert into pairs values (1, 'start'), (2, 'start');"
        " create table journal (id bigint generated always as identity primary key, msg text);"
        " select resilience.manage_table('pairs');"
    )
    return conn


def _notes(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    return conn.execute("select id, note from pairs order by id").fetchall()


@pytest.mark.timeout(60)
def test_a_batch_lock_takes_a_claimed_row_as_it_stands_but_cannot_write_it(
    pairs: psycopg.Connection[Any], dsn: str
) -> None:
    """A user reading a row with a batch's `lock` gets the claim holder's
    uncommitted value (documented); a write to it in the same batch fails at
    once with 55P03 and undoes the batch's earlier journal row."""
    conn = pairs
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    conn.execute(
        "select resilience.tx_execute(%s, 'pairs', 'update', %s, %s)",
        (tx, Jsonb({"note": "claimed"}), Jsonb({"id": 1})),
    )
    lock = {"table": "pairs", "operation": "lock", "match": {"id": 1}}
    result = conn.execute("select resilience.tx_run(%s)", (Jsonb([lock]),)).fetchone()
    assert result is not None
    assert result[0]["results"][0]["data"] == [{"id": 1, "note": "claimed"}]

    journal = {"table": "journal", "operation": "insert", "data": {"msg": "read"}}
    with TransactionManager(dsn, pool_size=1) as tm:
        batch = tm.run([journal, lock, _update(1, "mine")])
    assert not batch.success
    assert batch.error is not None and batch.error.sqlstate == "55P03"
    assert batch.error.detail["index"] == 2
    assert conn.execute("select count(*) from journal").fetchone() == (0,)
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert _notes(conn) == [(1, "start"), (2, "start")]


@pytest.mark.timeout(60)
def test_two_batches_in_opposite_order_deadlock_and_the_loser_leaves_nothing(
    pairs: psycopg.Connection[Any], dsn: str
) -> None:
    """Batches are plain transactions: B (2 then 1) waits for A, which holds
    1 and then wants 2. The database picks B (its deadlock_timeout is the
    shorter): 40P01 naming operation 1, and B's first update is undone."""
    a = psycopg.connect(dsn)  # A: one database transaction over two tx_run calls
    b = psycopg.connect(dsn, autocommit=True)
    try:
        b.execute("set deadlock_timeout = '50ms'")
        b_pid = b.info.backend_pid
        a.execute("set deadlock_timeout = '10s'")
        a.execute("select resilience.tx_run(%s)", (Jsonb([_update(1, "A")]),))
        outcome: dict[str, Any] = {}

        def run_b() -> None:
            try:
                b.execute(
                    "select resilience.tx_run(%s)", (Jsonb([_update(2, "B"), _update(1, "B")]),)
                )
                outcome["b"] = "committed"
            except psycopg.Error as exc:
                outcome["b"] = exc

        thread = threading.Thread(target=run_b, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not pairs.execute(
            "select exists (select from pg_stat_activity"
            " where pid = %s and wait_event_type = 'Lock')",
            (b_pid,),
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "B never waited for A's row"
            time.sleep(0.02)
        a.execute("select resilience.tx_run(%s)", (Jsonb([_update(2, "A")]),))
        thread.join(30)
        assert not thread.is_alive()
        a.commit()
    finally:
        a.close()
        b.close()
    error = outcome["b"]
    assert isinstance(error, psycopg.errors.DeadlockDetected), error
    assert error.diag.message_primary is not None
    assert error.diag.message_primary.startswith("tx_run operation 1 (update on pairs) failed")
    assert _notes(pairs) == [(1, "A"), (2, "A")]
    # In Python: a DatabaseError with the SQLSTATE, and running it again works.
    from pgresilience.errors import map_error

    mapped = map_error(error)
    assert isinstance(mapped, DatabaseError) and mapped.sqlstate == "40P01"
    with TransactionManager(dsn, pool_size=1) as tm:
        assert tm.run([_update(2, "B"), _update(1, "B")]).success
    assert _notes(pairs) == [(1, "B"), (2, "B")]
