"""A managed table changed by DDL is never captured with a stale shape
(DESIGN.md "Restore-point storage (v2)"). With the event triggers
installed, DDL regenerates the table's capture at once; without them (a
non-superuser owner), the next captured write fails with RZ007 naming
manage_table, and manage_table regenerates. Images taken before a column was
added make their rows conflict (RZ005) instead of restoring them without
that column; force restores them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute

SEED = "insert into codes values ('a', 'A'), ('b', 'B')"


def rows(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("select c::text from codes as c order by code")]


@pytest.fixture
def without_event_triggers(app: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The database as a non-superuser install leaves it: no event triggers."""
    app.execute("drop event trigger if exists resilience_managed_ddl_end")
    app.execute("drop event trigger if exists resilience_managed_sql_drop")
    return app


def test_ddl_regenerates_capture_at_once_with_event_triggers(app):
    app.execute(SEED)
    app.execute("alter table codes add column extra int default 7")
    before = rows(app)
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "x", "extra": 8}, {"code": "a"})
    execute(app, tx, "codes", "insert", {"code": "c", "label": "C", "extra": 9})
    call(app, "tx_rollback", tx)
    assert rows(app) == before


@pytest.mark.parametrize(
    "ddl",
    [
        "alter table codes add column extra int",
        "alter table codes rename column label to title",
        "alter table codes alter column label type varchar(40)",
        "alter table codes drop column label",
        "alter table codes rename to codes2",
    ],
)
def test_without_event_triggers_a_changed_table_fails_clearly_then_manage_table_fixes_it(
    without_event_triggers, ddl
):
    app = without_event_triggers
    app.execute(SEED)
    app.execute(ddl)
    table = "codes2" if "rename to" in ddl else "codes"
    tx = begin(app)
    with pytest.raises(psycopg.Error) as caught:
        execute(app, tx, table, "insert", {"code": "n"})
    assert caught.value.sqlstate == "RZ007"
    assert "manage_table" in (caught.value.diag.message_hint or "")
    # Plain writes outside logical transactions are not affected.
    app.execute(f"insert into {table} (code) values ('plain')")
    app.execute(f"select resilience.manage_table('{table}')")
    before = [r[0] for r in app.execute(f"select c::text from {table} as c order by code")]
    execute(app, tx, table, "insert", {"code": "n"})
    execute(app, tx, table, "delete", None, {"code": "a"})
    call(app, "tx_rollback", tx)
    after = [r[0] for r in app.execute(f"select c::text from {table} as c order by code")]
    assert after == before


def test_images_taken_before_a_column_was_added_conflict_and_force_restores(app):
    app.execute(SEED)
    before = rows(app)
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "a"})
    app.execute("alter table codes add column extra int")
    snapshot = rows(app)
    with pytest.raises(psycopg.Error) as caught:
        call(app, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    assert rows(app) == snapshot
    call(app, "tx_rollback", tx, None, True)
    assert rows(app) == [r.replace(")", ",)") for r in before]


def test_a_type_change_while_images_exist_is_refused_by_manage_table_not_the_ddl(app):
    """The DDL itself goes through (tracking never blocks a migration); the
    capture cannot be regenerated while images of the old type exist."""
    app.execute(SEED)
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "a"})
    app.execute("alter table codes alter column label type varchar(40)")
    with pytest.raises(psycopg.Error) as caught:
        execute(app, tx, "codes", "update", {"label": "again"}, {"code": "b"})
    assert caught.value.sqlstate == "RZ007"
    call(app, "tx_commit", tx)
    app.execute("select resilience.manage_table('codes')")
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "ok"}, {"code": "b"})
    assert call(app, "tx_rollback", tx)["restored_rows"] == 1


def test_dropping_a_managed_table_forgets_it(app):
    app.execute(SEED)
    app.execute("drop table codes")
    assert app.execute(
        "select count(*) from resilience.managed_tables where relation::text = 'codes'"
    ).fetchone() == (0,)
    assert app.execute(
        "select count(*) from pg_class where relnamespace = 'resilience'::regnamespace"
        " and relkind = 'r' and relname like '\\_img\\_%'"
        " and not exists (select 1 from resilience.managed_tables as m"
        " where m.image_table = pg_class.oid)"
    ).fetchone() == (0,)
