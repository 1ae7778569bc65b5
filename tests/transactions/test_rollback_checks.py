"""The rollback's after-image check, column by column: a change behind the
guards to any column of any type (typed or jsonb-compared) is a conflict,
naming exactly the changed rows; a column added meanwhile falls back to the
whole-image comparison."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import begin, call, execute, table_rows

SEED = """
insert into users (name, email, tags, meta, feeling, seen_at, balance, avatar) values
    ('ann', 'ann@example.com', '{a,b}', '{"k": 1}', 'happy', '2026-01-01 10:00+00', 1.50, '\\x01'),
    ('bob', null, null, null, null, null, null, null),
    ('cy', 'cy@example.com', '{c}', '{"k": [2]}', 'sad', '2026-06-01 12:00+00', 7, '\\x02')
"""

# (column, a value written behind the guards): every type the users table
# has, typed-compared (text, numeric, timestamptz) and jsonb-compared
# (text[], jsonb, enum, bytea); null -> value and value -> null.
BYPASSES = [
    ("name", "'ANN'"),
    ("email", "null"),
    ("email", "'Ann@example.com'"),
    ("tags", "'{a,b,c}'"),
    ("meta", """'{"k": 1.0, "x": null}'"""),
    ("feeling", "'sad'"),
    ("seen_at", "'2026-01-01 10:00:00.000001+00'"),
    ("balance", "1.51"),
    ("balance", "null"),
    ("avatar", "'\\x0102'"),
]


def bypass(conn: psycopg.Connection[Any], statement: sql.Composable) -> None:
    """A write that bypasses the guards (triggers disabled by a superuser)."""
    conn.execute("set session_replication_role = replica")
    conn.execute(statement)
    conn.execute("set session_replication_role = origin")


@pytest.mark.parametrize(("column", "value"), BYPASSES)
def test_a_change_to_any_column_behind_the_guards_is_a_conflict(app, column, value):
    app.execute(SEED)
    before = table_rows(app, "users")
    tx = begin(app)
    # One captured statement over all three rows (one batch).
    with app.transaction():
        app.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        app.execute("update users set email = 'tx@example.com'")
    bypass(
        app,
        sql.SQL("update users set {} = {} where name = 'ann'").format(
            sql.Identifier(column), sql.SQL(value)
        ),
    )
    changed = table_rows(app, "users")
    with pytest.raises(psycopg.Error) as caught:
        call(app, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    conflicts = json.loads(caught.value.diag.message_detail or "{}")["conflicts"]
    assert [c["key"] for c in conflicts] == [{"id": before[0]["id"]}]
    assert table_rows(app, "users") == changed
    forced = call(app, "tx_rollback", tx, None, True)
    assert [c["key"] for c in forced["conflicts"]] == [{"id": before[0]["id"]}]
    assert table_rows(app, "users") == before


def test_a_changed_insert_is_a_conflict_and_an_unchanged_one_is_undone(app):
    tx = begin(app)
    execute(app, tx, "codes", "insert", [{"code": "a", "label": "A"}, {"code": "b", "label": "B"}])
    bypass(app, sql.SQL("update codes set label = 'A ' where code = 'a'"))
    with pytest.raises(psycopg.Error) as caught:
        call(app, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    conflicts = json.loads(caught.value.diag.message_detail or "{}")["conflicts"]
    assert [c["key"] for c in conflicts] == [{"code": "a"}]
    bypass(app, sql.SQL("update codes set label = 'A' where code = 'a'"))
    assert call(app, "tx_rollback", tx)["restored_rows"] == 2
    assert table_rows(app, "codes") == []


def test_a_column_added_during_the_transaction_makes_its_rows_conflict(app):
    app.execute("insert into codes values ('a', 'A'), ('b', 'B')")
    before = table_rows(app, "codes")
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "a"})
    app.execute("alter table codes add column extra int")
    with pytest.raises(psycopg.Error) as caught:
        call(app, "tx_rollback", tx)
    # The images lack the new column: the row no longer equals its image.
    assert caught.value.sqlstate == "RZ005"
    call(app, "tx_rollback", tx, None, True)
    restored = [{k: v for k, v in r.items() if k != "extra"} for r in table_rows(app, "codes")]
    assert restored == before


def test_a_rollback_in_another_time_zone_restores_timestamptz(app):
    app.execute("set timezone = 'UTC'")
    app.execute(SEED)
    before = table_rows(app, "users")
    tx = begin(app)
    execute(app, tx, "users", "update", {"seen_at": "2026-03-01 08:00+00"}, {"name": "ann"})
    app.execute("set timezone = 'Europe/Paris'")
    assert call(app, "tx_rollback", tx)["restored_rows"] == 1
    app.execute("set timezone = 'UTC'")
    assert table_rows(app, "users") == before
