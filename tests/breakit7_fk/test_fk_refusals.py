"""Rollback across foreign keys: undoing an insert (or a key update) must never
change rows others wrote since through ON DELETE / ON UPDATE actions; such a
rollback is refused (RZ005, "sqlstate": "23503", the foreign key named) with
nothing changed, and goes through once their rows are gone.
(docs/transactions.md, "Rollback".)"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql


def begin(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("select resilience.tx_begin()").fetchone()
    assert row is not None
    return row[0]


def as_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def execute(
    conn: psycopg.Connection[Any],
    tx: Any,
    table: str,
    operation: str,
    data: Any = None,
    match: Any = None,
) -> Any:
    # (JSON text as it is: a numeric's scale must survive)
    row = conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (tx, table, operation, as_json(data), as_json(match)),
    ).fetchone()
    assert row is not None
    return row[0]


def rollback(conn: psycopg.Connection[Any], tx: Any, force: bool = False) -> Any:
    row = conn.execute("select resilience.tx_rollback(%s, force => %s)", (tx, force)).fetchone()
    assert row is not None
    return row[0]


def refused_fks(conn: psycopg.Connection[Any], tx: Any, force: bool = False) -> list[str]:
    """Rolls back, expecting the refusal; returns the foreign keys named with 23503."""
    with pytest.raises(psycopg.Error) as caught:
        rollback(conn, tx, force)
    assert caught.value.sqlstate == "RZ005"
    assert caught.value.diag.message_detail is not None
    detail = json.loads(caught.value.diag.message_detail)
    return sorted(c["constraint"] for c in detail["conflicts"] if c.get("sqlstate") == "23503")


def rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    # (t.* is the row even where a column is named t)
    query = sql.SQL("select (t.*)::text from {} as t order by 1").format(sql.Identifier(table))
    return [r[0] for r in conn.execute(query)]


def status(conn: psycopg.Connection[Any], tx: Any) -> str:
    row = conn.execute("select status from resilience.transactions where id = %s", (tx,)).fetchone()
    assert row is not None
    return str(row[0])


def manage(conn: psycopg.Connection[Any], *tables: str) -> None:
    for table in tables:
        conn.execute("select resilience.manage_table(%s::regclass)", (table,))


def test_insert_undo_refused_when_others_row_was_only_touched_by_the_transaction(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Their child row references the inserted parent; the transaction merely
    updated a non-key column of it. The image makes it no more the
    transaction's own: undoing the insert would delete it (ON DELETE CASCADE)."""
    conn.execute(
        "create table parent (id integer primary key);"
        " create table child (id integer primary key,"
        "  parent_id integer constraint child_parent references parent on delete cascade,"
        "  note text)"
    )
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1, 'theirs')")
    execute(conn, tx, "child", "update", {"note": "touched"}, {"id": 10})
    assert refused_fks(conn, tx) == ["child_parent"]
    assert rows(conn, "child") == ["(10,1,touched)"]
    assert rows(conn, "parent") == ["(1)"]
    assert status(conn, tx) == "active"


def test_key_update_undo_refused_when_new_key_differs_only_in_binary_image(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """1.0 -> 1.00 is no change to `=`, but PostgreSQL's ON UPDATE actions fire
    on any change of the key's binary image: giving 1.0 back would set their
    row's reference to NULL."""
    conn.execute(
        "create table parent (k numeric primary key);"
        " create table child (id integer primary key,"
        "  k numeric constraint child_parent references parent on update set null);"
        " insert into parent values (1.0)"
    )
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "update", '{"k": 1.00}', '{"k": 1.0}')
    assert rows(conn, "parent") == ["(1.00)"]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1.00)")
    assert refused_fks(conn, tx) == ["child_parent"]
    assert rows(conn, "child") == ["(10,1.00)"]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("delete from child")
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "parent") == ["(1.0)"]


def test_insert_undo_refused_through_fk_to_a_partition_whose_columns_are_numbered_differently(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """The foreign key references one partition of the managed table; the
    partition's attribute numbers are not the parent's (a dropped column)."""
    conn.execute(
        "create table parent (id integer not null, v text, w integer, primary key (id))"
        "  partition by list (id);"
        " create table part1 (gone integer, v text, id integer not null, w integer);"
        " alter table part1 drop column gone;"
        " alter table parent attach partition part1 for values in (1, 2);"
        " create table child (id integer primary key,"
        "  pid integer constraint child_part1 references part1 (id) on delete cascade)"
    )
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1, "v": "x", "w": 7})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1)")
    assert refused_fks(conn, tx) == ["child_part1"]
    assert rows(conn, "child") == ["(10,1)"]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("delete from child")
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "parent") == []


CASCADE = (
    "create table parent (id integer primary key);"
    " create table child (id integer primary key,"
    "  parent_id integer constraint child_parent references parent on delete cascade, note text);"
    " insert into parent values (0)"
)


def test_insert_undo_refused_when_others_row_was_locked_then_updated(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """The transaction's first image of their row is a lock (its claim): the
    update after it still finds the row referring to the new parent."""
    conn.execute(CASCADE)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1, 'theirs')")
    execute(conn, tx, "child", "lock", None, {"id": 10})
    execute(conn, tx, "child", "update", {"note": "touched"}, {"id": 10})
    assert refused_fks(conn, tx) == ["child_parent"]
    assert rows(conn, "child") == ["(10,1,touched)"]


def test_insert_undo_refused_when_others_row_changed_key_and_back(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Their row's key moved away and back: its claim is the old-key claim,
    and its first image at that key still refers to the new parent."""
    conn.execute(CASCADE)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child values (10, 1, 'theirs')")
    execute(conn, tx, "child", "update", {"id": 11}, {"id": 10})
    execute(conn, tx, "child", "update", {"id": 10}, {"id": 11})
    assert refused_fks(conn, tx) == ["child_parent"]
    assert rows(conn, "child") == ["(10,1,theirs)"]


def test_savepoint_rollback_counts_own_row_written_before_the_savepoint(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """Its own child row, inserted before the savepoint and pointed at a
    parent inserted after it, goes back to its old parent: no refusal."""
    conn.execute(CASCADE)
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "child", "insert", {"id": 10, "parent_id": 0})
    conn.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    execute(conn, tx, "parent", "insert", {"id": 1})
    execute(conn, tx, "child", "update", {"parent_id": 1}, {"id": 10})
    conn.execute("select resilience.tx_rollback_to(%s, 'sp')", (tx,))
    assert rows(conn, "parent") == ["(0)"]
    assert rows(conn, "child") == ["(10,0,)"]
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, "child") == []
