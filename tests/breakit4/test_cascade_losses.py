"""An FK action into a table pgresilience does not manage.

The promise (DESIGN.md section 1, "Rollback": a restore never skips a row
silently): the rows an FK action removes or changes must be restored by the
rollback, or the write must be refused and change nothing. A child table
that is not managed is not captured, so its rows could not come back: the
statement that reaches it is refused with 0A000 (as TRUNCATE is). It used
to go through, and tx_rollback restored the parent, reported success and
left the child rows deleted or NULL."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, rows_text, sqlstate_of

SCHEMA = """
create table parent (id int primary key, v int);
create table kids (
    id int primary key,
    parent int references parent on delete cascade on update cascade
);
create table pets (
    id int primary key,
    parent int references parent on delete set null on update set null
);
create table toys (id int, parent int references parent on delete cascade, primary key (id, parent))
    partition by range (id);
create table toys_low partition of toys for values from (0) to (100);
insert into parent values (1, 0), (2, 0), (3, 0);
insert into kids values (10, 1);
insert into pets values (20, 1);
insert into toys values (30, 2);
select resilience.manage_table('parent');
"""


def _state(conn: psycopg.Connection[Any]) -> list[list[str]]:
    return [rows_text(conn, t, "id") for t in ("parent", "kids", "pets", "toys")]


@pytest.mark.parametrize(
    ("operation", "data", "match"),
    [
        ("delete", None, {"id": 1}),  # CASCADE into kids, SET NULL into pets
        ("update", {"id": 5}, {"id": 1}),  # ON UPDATE CASCADE / SET NULL
        ("delete", None, {"id": 2}),  # CASCADE into a partitioned table
    ],
    ids=["delete", "key_change", "partitioned_child"],
)
def test_action_into_an_unmanaged_table_is_refused(
    conn: psycopg.Connection[Any], operation: str, data: Any, match: Any
) -> None:
    conn.execute(SCHEMA)
    before = _state(conn)
    tx = begin(conn)
    assert sqlstate_of(execute, conn, tx, "parent", operation, data, match) == "0A000"
    assert _state(conn) == before
    # the transaction goes on: an UPDATE that changes no referenced key is
    # allowed; any DELETE of rows is not (once the action ran, nothing tells
    # whether it reached a child row), nor is one of a row without children
    assert execute(conn, tx, "parent", "update", {"v": 9}, {"id": 1})["count"] == 1
    assert execute(conn, tx, "parent", "update", {"id": 3}, {"id": 3})["count"] == 1
    assert sqlstate_of(execute, conn, tx, "parent", "delete", None, {"id": 3}) == "0A000"
    assert execute(conn, tx, "parent", "delete", None, {"id": 99})["count"] == 0
    assert call(conn, "tx_rollback", tx)["success"] is True
    assert _state(conn) == before


def test_header_mode_statement_reaching_an_unmanaged_table_is_refused(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(SCHEMA)
    before = _state(conn)
    tx = begin(conn)
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        headers = json.dumps({"x-resilience-tx": tx})
        conn.execute("select set_config('request.headers', %s, true)", (headers,))
        conn.execute("delete from parent")
    assert caught.value.sqlstate == "0A000"
    assert _state(conn) == before
    call(conn, "tx_rollback", tx)


def test_managing_the_children_makes_the_same_writes_roll_back(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(SCHEMA)
    for child in ("kids", "pets", "toys"):
        call(conn, "manage_table", child)
    before = _state(conn)
    tx = begin(conn)
    execute(conn, tx, "parent", "update", {"id": 5}, {"id": 1})
    execute(conn, tx, "parent", "delete", None, {"id": 5})
    execute(conn, tx, "parent", "delete", None, {"id": 2})
    assert _state(conn) != before
    assert call(conn, "tx_rollback", tx)["success"] is True
    assert _state(conn) == before


def test_plain_writes_outside_logical_transactions_are_not_refused(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(SCHEMA)
    conn.execute("delete from parent where id = 1")
    assert rows_text(conn, "kids", "id") == []


def test_action_from_a_partitioned_managed_parent_is_refused(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("""
        create table pp (id int primary key) partition by range (id);
        create table pp1 partition of pp for values from (0) to (100);
        create table kid (id int primary key, p int references pp on delete cascade);
        insert into pp values (1), (2);
        insert into kid values (10, 1);
        select resilience.manage_table('pp');
    """)
    tx = begin(conn)
    assert sqlstate_of(execute, conn, tx, "pp", "delete", None, {"id": 1}) == "0A000"
    assert rows_text(conn, "kid", "id") == ["(10,1)"]
    call(conn, "tx_rollback", tx)
