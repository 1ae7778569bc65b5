"""A rollback deletes the rows its transaction inserted. Those rows were
visible the whole time, so other sessions may have written rows that
reference them; a foreign key with ON DELETE CASCADE, SET NULL or SET
DEFAULT would then delete or change those rows with the undo, and no image
could bring them back. Promise (docs/transactions.md, "Rollback"): no row
is changed or lost silently: the rollback is refused (RZ005 naming the
foreign key, SQLSTATE 23503 in its detail) and restores nothing. Rows the
transaction itself wrote are undone first (newest first), so they never
count."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb


def rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"select t::text from {table} as t order by 1").fetchall()]


def execute(
    conn: psycopg.Connection[Any], tx: Any, table: str, op: str, data: Any, match: Any = None
) -> Any:
    return conn.execute(
        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
        (tx, table, op, Jsonb(data) if data is not None else None, Jsonb(match) if match else None),
    ).fetchone()


SCHEMA = """
create table project (id int primary key, name text);
create table task (
    id int primary key, project int references project on delete {action}, title text
);
select resilience.manage_table('project');
"""


@pytest.mark.parametrize("action", ["cascade", "set null"])
@pytest.mark.parametrize("child_managed", [False, True])
def test_a_rollback_never_takes_rows_others_wrote_with_it(
    conn: psycopg.Connection[Any], dsn: str, action: str, child_managed: bool
) -> None:
    conn.execute(SCHEMA.format(action=action))
    if child_managed:
        conn.execute("select resilience.manage_table('task')")
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    execute(conn, tx, "project", "insert", {"id": 1, "name": "launch"})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute("insert into task values (10, 1, 'theirs')")

    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert caught.value.sqlstate == "RZ005"
    detail = json.loads(caught.value.diag.message_detail or "{}")
    assert [(c["sqlstate"], c["constraint"]) for c in detail["conflicts"]] == [
        ("23503", "task_project_fkey")
    ]
    assert rows(conn, "project") == ["(1,launch)"]
    assert rows(conn, "task") == ["(10,1,theirs)"]
    assert conn.execute("select resilience.tx_status(%s) ->> 'status'", (tx,)).fetchone() == (
        "active",
    )

    # Their row gone (or pointing elsewhere), the rollback goes through.
    conn.execute("delete from task")
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(conn, "project") == []


def test_rows_the_transaction_wrote_go_with_their_parent(conn: psycopg.Connection[Any]) -> None:
    """Its own child rows (another managed table, and the same table through a
    self-reference, in one statement) are undone, not counted."""
    conn.execute(SCHEMA.format(action="cascade"))
    conn.execute(
        "alter table project add column parent int references project on delete cascade;"
        " select resilience.manage_table('task')"
    )
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    conn.execute("begin")
    conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
    conn.execute("insert into project values (1, 'root', null), (2, 'child', 1)")
    conn.execute("commit")
    execute(conn, tx, "task", "insert", {"id": 10, "project": 2, "title": "mine"})
    execute(conn, tx, "project", "insert", {"id": 3, "name": "leaf", "parent": 2})

    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(conn, "project") == []
    assert rows(conn, "task") == []


def test_a_partitioned_parent_is_checked_through_its_partitions(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "create table project (id int primary key, name text) partition by range (id);"
        " create table project_low partition of project for values from (0) to (100);"
        " create table task (id int primary key, project int references project on delete cascade);"
        " select resilience.manage_table('project')"
    )
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    execute(conn, tx, "project", "insert", {"id": 1, "name": "launch"})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute("insert into task values (10, 1)")

    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert caught.value.sqlstate == "RZ005"
    assert rows(conn, "task") == ["(10,1)"]


def test_an_owner_who_cannot_read_the_referencing_table_gets_the_guarantee_too(
    conn: psycopg.Connection[Any], dsn: str, make_role: Any
) -> None:
    """The check reads the referencing tables as the package owner: the
    parent table's owner need not be allowed to read them, and its
    rollbacks are neither refused for that nor left unchecked."""
    make_role("cascade_parent_owner", login=False)
    conn.execute(SCHEMA.format(action="cascade"))
    conn.execute("alter table project owner to cascade_parent_owner")
    conn.execute("select resilience.manage_table('project')")
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    execute(conn, tx, "project", "insert", {"id": 1, "name": "launch"})
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(conn, "project") == []

    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    execute(conn, tx, "project", "insert", {"id": 1, "name": "launch"})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute("insert into task values (10, 1, 'theirs')")
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert caught.value.sqlstate == "RZ005"
    assert rows(conn, "task") == ["(10,1,theirs)"]
