"""Promise (docs/transactions.md, "Decisions where DESIGN.md is silent"): a
table with inheritance children is refused (22023), since a statement aimed
at a child fires only the child's triggers; a rollback restores only rows
the transaction wrote. Broken by a child added *after* manage_table: the
capture went on, and the undo (an UPDATE of the parent, children included)
overwrote another user's row in the child that equalled an after-image."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import call, rows_text, sqlstate_of, without_event_triggers

TABLE = """
create table m (id integer primary key, v text);
insert into m values (1, 'a'), (2, 'b');
select resilience.manage_table('m');
"""


@pytest.mark.parametrize("event_triggers", [True, False])
@pytest.mark.parametrize(
    "make_child",
    [
        "create table c () inherits (m)",
        "create table c (id integer not null, v text); alter table c inherit m",
    ],
)
def test_inheritance_child_added_while_images_are_held(
    conn: psycopg.Connection[Any], event_triggers: bool, make_child: str
) -> None:
    conn.execute(TABLE)
    if not event_triggers:
        without_event_triggers(conn)
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "m", "update", {"v": "x"}, {"id": 1})
    conn.execute(make_child)
    # Another user's row in the child, equal to the after-image of row 1.
    conn.execute("insert into c values (1, 'x'), (2, 'y')")

    # Refused from now on: 22023 (the table cannot be managed) or RZ007 (its
    # shape changed since manage_table).
    state = sqlstate_of(call, conn, "tx_execute", tx, "m", "update", {"v": "z"}, {"id": 2})
    assert state in ({"22023"} if event_triggers else {"RZ007"})
    assert sqlstate_of(conn.execute, "select resilience.manage_table('m')") == "22023"

    assert call(conn, "tx_rollback", tx)["restored_rows"] == 1
    assert rows_text(conn, "m") == ["(1,a)", "(1,x)", "(2,b)", "(2,y)"]
    assert conn.execute(
        "select array_agg(t::text order by t::text) from only m as t"
    ).fetchone() == (["(1,a)", "(2,b)"],)
    assert rows_text(conn, "c") == ["(1,x)", "(2,y)"]
