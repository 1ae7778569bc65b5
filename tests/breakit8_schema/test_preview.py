"""`resilience.schema_preview()` (docs/schema_tracking.md "Preview"): what
this transaction's DDL would record at commit, with nothing recorded: no
version, no snapshot change, no audit row, no NOTIFY; the live version is
unchanged, the DDL stays pending for the real commit, and migrations in
other sessions are not disturbed."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgresilience import installer
from pgresilience.schema._core import ChangeList

from .conftest import set_diff_mode


def recorded(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Everything a fold writes, as seen by another session."""
    row = conn.execute(
        """
        select (select count(*) from resilience.schema_versions),
               (select max(version) from resilience.schema_versions),
               (select count(*) from resilience.audit_log),
               (select md5(string_agg(hash, ',' order by hash)) from resilience.schema_objects),
               resilience.schema_current() ->> 'hash'
        """
    ).fetchone()
    assert row is not None
    return tuple(row)


def preview(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute("select resilience.schema_preview()").fetchone()
    assert row is not None
    return dict(row[0])


def summary(changes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((c["type"], str(c["table"]), c["severity"]) for c in changes)


def test_a_rolled_back_preview_leaves_nothing(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("create table users (id int primary key, email text)")
    before = recorded(conn)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_schema")
        with psycopg.connect(dsn) as migration:
            migration.execute("alter table users drop column email")
            live = migration.execute("select resilience.schema_current()").fetchone()
            seen = preview(migration)
            assert seen["preview"] is True
            assert summary(ChangeList.from_row(seen)) == [
                ("column_dropped", "public.users", "critical")
            ]
            # In the previewing transaction itself, the live version is unchanged.
            assert migration.execute("select resilience.schema_current()").fetchone() == live
            assert recorded(conn) == before
            migration.rollback()
        assert recorded(conn) == before
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []


def test_the_preview_announces_the_version_the_commit_records(
    conn: psycopg.Connection[Any], dsn: str, diff_mode: str, server_features: Any
) -> None:
    set_diff_mode(dsn, diff_mode)
    conn.execute("create table users (id int primary key, email text)")
    before = recorded(conn)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_schema")
        with psycopg.connect(dsn) as migration:
            migration.execute("alter table users add column age int not null")
            first = preview(migration)
            migration.execute("create index users_email_idx on users (email)")
            second = preview(migration)
            again = preview(migration)
            assert recorded(conn) == before
            migration.commit()
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert summary(ChangeList.from_row(first)) == [("column_added", "public.users", "high")]
    # Twice the same preview (taken_at is the clock when it ran).
    assert {**second, "taken_at": None} == {**again, "taken_at": None}
    rows = conn.execute("select resilience.schema_changes_since(%s)", (before[1],)).fetchall()
    assert len(rows) == 1  # one version for the whole transaction, previews or not
    committed = rows[0][0]
    assert (committed["version"], committed["hash"]) == (second["version"], second["hash"])
    assert (
        summary(ChangeList.from_row(committed))
        == summary(ChangeList.from_row(second))
        == [
            ("column_added", "public.users", "high"),
            ("index_added", "public.users", "medium"),
        ]
    )
    assert [n["version"] for n in notices] == [committed["version"]]
    # Rated at commit only where PL/Python diffs at commit.
    assert notices[0]["rated"] is (diff_mode == "at_commit" and server_features.plpython)


def test_a_preview_does_not_hold_up_another_sessions_migration(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """A previews and stays in its transaction; B's migration commits
    meanwhile (the fold lock the preview took went with its subtransaction);
    each version holds only its own transaction's changes."""
    conn.execute("create table orders (id int primary key, note text)")
    conn.execute("create table invoices (id int primary key, total numeric)")
    start = recorded(conn)[1]
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        a.execute("alter table orders drop column note")
        assert summary(ChangeList.from_row(preview(a))) == [
            ("column_dropped", "public.orders", "critical")
        ]
        # Guard, not a timing assert: a blocked commit fails instead of hanging.
        b.execute("set statement_timeout = '30s'")
        b.execute("alter table invoices alter column total set not null")
        b.commit()
        # A's preview after B's commit: still only A's change, on top of B's version.
        seen = preview(a)
        assert summary(ChangeList.from_row(seen)) == [
            ("column_dropped", "public.orders", "critical")
        ]
        a.commit()
    rows = [r[0] for r in conn.execute("select resilience.schema_changes_since(%s)", (start,))]
    assert [summary(ChangeList.from_row(r)) for r in rows] == [
        [("nullability_changed", "public.invoices", "high")],
        [("column_dropped", "public.orders", "critical")],
    ]
    assert (rows[-1]["version"], rows[-1]["hash"]) == (seen["version"], seen["hash"])
    assert conn.execute("select resilience.schema_refresh() ->> 'changed'").fetchone() == ("false",)


def test_a_preview_ignores_another_sessions_uncommitted_migration(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute("create table orders (id int primary key, note text)")
    conn.execute("create table invoices (id int primary key, total numeric)")
    start = recorded(conn)[1]
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        b.execute("alter table invoices drop column total")  # not committed yet
        a.execute("alter table orders add column shipped boolean")
        assert summary(ChangeList.from_row(preview(a))) == [
            ("column_added", "public.orders", "low")
        ]
        a.rollback()
        b.commit()
    rows = [r[0] for r in conn.execute("select resilience.schema_changes_since(%s)", (start,))]
    assert [summary(ChangeList.from_row(r)) for r in rows] == [
        [("column_dropped", "public.invoices", "critical")]
    ]


def test_a_preview_without_ddl_is_the_current_version_with_no_change(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute("create table users (id int)")
    current = conn.execute("select resilience.schema_current()").fetchone()
    assert current is not None
    with psycopg.connect(dsn) as migration:
        migration.execute("insert into users values (1)")
        seen = preview(migration)
    assert (seen["version"], seen["hash"]) == (current[0]["version"], current[0]["hash"])
    assert (seen["changes"], seen["change_count"], seen["max_severity"]) == ([], 0, None)
    assert seen["tables"] == []


@pytest.fixture
def no_event_triggers_dsn(bare_dsn: str) -> str:
    """pgresilience installed without event triggers (a non-superuser
    install, or --no-event-triggers)."""
    installer.install(bare_dsn, event_triggers=False)
    return bare_dsn


def test_without_event_triggers_the_preview_compares_the_whole_catalog(
    no_event_triggers_dsn: str,
) -> None:
    dsn = no_event_triggers_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table users (id int, email text)")
        conn.execute("select resilience.schema_refresh()")
        conn.execute("create table drift (id int)")  # untracked: no event triggers
        before = recorded(conn)
        with psycopg.connect(dsn) as migration:
            migration.execute("alter table users drop column email")
            seen = preview(migration)
            migration.rollback()
        assert recorded(conn) == before
    # As schema_refresh() would: the migration's change and the earlier drift.
    assert summary(ChangeList.from_row(seen)) == [
        ("column_dropped", "public.users", "critical"),
        ("table_added", "public.drift", "low"),
    ]
