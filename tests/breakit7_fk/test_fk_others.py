"""Others' rows and false refusals: a colleague's row referencing the
transaction's new row or new key makes the rollback refused, nothing changed,
whichever way the rollback comes (tx_rollback, force, the reaper), and even
when the colleague's write is still in flight when the rollback starts; the
rollback goes through once their row is gone. The transaction's own rows,
savepoint rollbacks that do not reach the row, and hostile names never make
a refusal. (docs/transactions.md, "Rollback".)"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from .test_fk_refusals import begin, execute, manage, refused_fks, rollback, rows, status

PARENT_CHILD = """
create table parent (id integer primary key);
create table child (id integer primary key,
    parent_id integer constraint child_parent references parent
        on delete cascade on update cascade);
"""


def test_refused_when_their_insert_is_in_flight_as_the_rollback_starts(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Their child row is inserted, not yet committed, when the rollback reads
    the referencing rows: the undo's delete waits for their commit, and the
    cascade must not then delete the row it never checked."""
    conn.execute(PARENT_CHILD)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    outcome: dict[str, Any] = {}
    with psycopg.connect(dsn) as other, psycopg.connect(dsn, autocommit=True) as roller:
        other.execute("insert into child values (10, 1)")  # open: holds a key share lock
        pid = roller.info.backend_pid

        def roll() -> None:
            try:
                outcome["result"] = rollback(roller, tx)
            except psycopg.Error as error:
                outcome["sqlstate"] = error.sqlstate

        thread = threading.Thread(target=roll)
        thread.start()
        for _ in range(500):
            waiting = conn.execute(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if waiting is not None and waiting[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the rollback never waited for their row lock")
        other.commit()
        thread.join(30)
    assert outcome.get("sqlstate") == "RZ005"
    assert rows(conn, "child") == ["(10,1)"]
    assert rows(conn, "parent") == ["(1)"]
    assert status(conn, tx) == "active"


def test_refused_with_force_and_through_when_their_row_is_gone(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(PARENT_CHILD)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1)")
        assert refused_fks(conn, tx, force=True) == ["child_parent"]
        assert rows(conn, "child") == ["(10,1)"]
        other.execute("delete from child")
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "parent") == []


def test_refused_when_another_logical_transaction_references_the_new_key(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(PARENT_CHILD + "insert into parent values (1);")
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "update", {"id": 2}, {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        theirs = begin(other)
        execute(other, theirs, "child", "insert", {"id": 10, "parent_id": 2})
        assert refused_fks(conn, tx) == ["child_parent"]
        assert rows(conn, "child") == ["(10,2)"]
        assert rollback(other, theirs)["status"] == "rolled_back"
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "parent") == ["(1)"]
    assert rows(conn, "child") == []


def test_reaper_marks_failed_with_nothing_changed_and_admin_retry_goes_through(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(PARENT_CHILD)
    manage(conn, "parent", "child")
    tx = conn.execute("select resilience.tx_begin(timeout_ms => 200)").fetchone()[0]  # type: ignore[index]
    execute(conn, tx, "parent", "insert", {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1)")
        time.sleep(0.25)
        conn.execute("select resilience.tx_reap()")
        assert status(conn, tx) == "failed"
        assert rows(conn, "child") == ["(10,1)"]
        assert rows(conn, "parent") == ["(1)"]
        other.execute("delete from child")
    assert rollback(conn, tx, force=True)["status"] == "rolled_back"
    assert rows(conn, "parent") == []


def test_savepoint_rollback_before_the_insert_is_not_refused(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Their row references a row inserted before the savepoint: rolling back
    to it does not undo that insert, so nothing is refused."""
    conn.execute(PARENT_CHILD)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    conn.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    execute(conn, tx, "parent", "insert", {"id": 2})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1)")
    conn.execute("select resilience.tx_rollback_to(%s, 'sp')", (tx,))
    assert rows(conn, "parent") == ["(1)"]
    assert rows(conn, "child") == ["(10,1)"]


def test_own_child_rows_in_a_self_reference_go_back_with_the_insert(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """The transaction's own rows (inserted, or pointed at the new row by its
    update) are no one else's; their rows in the same table are."""
    conn.execute(
        "create table node (id integer primary key,"
        " up integer constraint node_up references node on delete set null, tag text);"
        " insert into node values (5, null, 'old')"
    )
    manage(conn, "node")
    tx = begin(conn)
    execute(conn, tx, "node", "insert", [{"id": 1, "up": None}, {"id": 2, "up": 1}])
    execute(conn, tx, "node", "update", {"up": 1}, {"id": 5})
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "node") == ["(5,,old)"]
    tx = begin(conn)
    execute(conn, tx, "node", "insert", {"id": 1, "up": None})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into node values (3, 1, 'theirs')")
    assert refused_fks(conn, tx) == ["node_up"]
    assert rows(conn, "node") == ["(1,,)", "(3,1,theirs)", "(5,,old)"]


@pytest.mark.xfail(
    strict=True,
    reason="a key updated and updated back refuses over their row the undo cascades away and back",
)
def test_key_updated_and_back_is_not_refused_over_their_row_that_ends_unchanged(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Undoing 2 -> 1 then 1 -> 2 cascades their row referencing 1 to 2 and
    back: it ends as they wrote it, so there is nothing to refuse."""
    conn.execute(PARENT_CHILD + "insert into parent values (1);")
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "update", {"id": 2}, {"id": 1})
    execute(conn, tx, "parent", "update", {"id": 1}, {"id": 2})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1)")
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "child") == ["(10,1)"]
