"""Undoing an UPDATE that changed a referenced key gives the row its old key
back. Rows other sessions wrote since that reference the new key would
follow it (ON UPDATE CASCADE) or lose it (SET NULL, SET DEFAULT), and no
image could bring them back. Promise (docs/transactions.md, "Rollback"):
no row is changed silently: the rollback is refused (RZ005, SQLSTATE 23503
and the foreign key in its detail) and restores nothing. The rows the
transaction's own update moved through the cascade are its own: they go
back with it."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb


def rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"select t::text from {table} as t order by 1").fetchall()]


def update(conn: psycopg.Connection[Any], tx: Any, table: str, data: Any, match: Any) -> None:
    conn.execute(
        "select resilience.tx_execute(%s, %s, 'update', %s, %s)",
        (tx, table, Jsonb(data), Jsonb(match)),
    )


def begin(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]


def refused(conn: psycopg.Connection[Any], tx: Any, table: str) -> list[tuple[str, str]]:
    """The conflicts of the refused rollback's steps on ``table``."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert caught.value.sqlstate == "RZ005"
    detail = json.loads(caught.value.diag.message_detail or "{}")
    return [(c["sqlstate"], c["constraint"]) for c in detail["conflicts"] if c["table"] == table]


SCHEMA = """
create table project (id int primary key, name text);
insert into project values (0, 'inbox'), (1, 'launch');
create table task (
    id int primary key,
    project int default 0 references project on update {action},
    title text
);
insert into task values (5, 1, 'moved by our update');
select resilience.manage_table('project');
select resilience.manage_table('task');
"""


@pytest.mark.parametrize("action", ["cascade", "set null", "set default"])
def test_a_key_given_back_never_moves_rows_others_wrote_since(
    conn: psycopg.Connection[Any], dsn: str, action: str
) -> None:
    conn.execute(SCHEMA.format(action=action))
    before = rows(conn, "project"), rows(conn, "task")
    tx = begin(conn)
    update(conn, tx, "project", {"id": 2}, {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute("insert into task values (10, 2, 'theirs')")
    during = rows(conn, "project"), rows(conn, "task")

    # (The step of the task it moved waits for its parent: reported too.)
    assert refused(conn, tx, "public.project") == [("23503", "task_project_fkey")]
    assert (rows(conn, "project"), rows(conn, "task")) == during
    assert "(10,2,theirs)" in during[1]
    assert conn.execute("select resilience.tx_status(%s) ->> 'status'", (tx,)).fetchone() == (
        "active",
    )

    # Their row gone, the rollback goes through, exactly.
    conn.execute("delete from task where id = 10")
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert (rows(conn, "project"), rows(conn, "task")) == before


def test_rows_moved_by_the_transactions_own_update_go_back_with_it(
    conn: psycopg.Connection[Any],
) -> None:
    """Its cascade into another managed table, and into the same table
    through a self-reference, and a child it updated again after."""
    conn.execute(SCHEMA.format(action="cascade"))
    conn.execute(
        "alter table project add column parent int references project on update cascade;"
        " insert into project values (3, 'sub', 1);"
        " insert into task values (6, 1, 'edited after')"
    )
    before = rows(conn, "project"), rows(conn, "task")
    tx = begin(conn)
    update(conn, tx, "project", {"id": 2}, {"id": 1})
    update(conn, tx, "task", {"title": "edited"}, {"id": 6})
    assert rows(conn, "project")[-2:] == ["(2,launch,)", "(3,sub,2)"]

    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert (rows(conn, "project"), rows(conn, "task")) == before


def test_a_foreign_key_added_after_the_update_is_checked_too(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "create table project (id int primary key, name text);"
        " insert into project values (1, 'launch');"
        " select resilience.manage_table('project')"
    )
    tx = begin(conn)
    update(conn, tx, "project", {"id": 2}, {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute(
            "create table note (id int primary key,"
            " project int references project on update cascade);"
            " insert into note values (1, 2)"
        )

    assert refused(conn, tx, "public.project") == [("23503", "note_project_fkey")]
    assert rows(conn, "note") == ["(1,2)"]


def test_an_update_that_kept_the_key_is_undone_whatever_references_it(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(SCHEMA.format(action="cascade"))
    tx = begin(conn)
    update(conn, tx, "project", {"name": "renamed"}, {"id": 1})
    with psycopg.connect(dsn, autocommit=True) as colleague:
        colleague.execute("insert into task values (10, 1, 'theirs')")

    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(conn, "project") == ["(0,inbox)", "(1,launch)"]
    assert "(10,1,theirs)" in rows(conn, "task")
