"""Without event triggers or without PL/Python (hosted platforms), `status`
and `watch` say plainly how changes reach the user, and every change a user
sees carries a severity: the client rates what the database could not."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgresilience.schema import SchemaVersionManager
from pgresilience.schema.status import status_lines

from .conftest import drop_plpython_diff, libpython_mapped, watch_lines

ONLY_AFTER_REFRESH = "appear ONLY after resilience.schema_refresh()"


def drop_event_triggers(conn: psycopg.Connection[Any]) -> None:
    conn.execute("drop event trigger resilience_schema_ddl_end")
    conn.execute("drop event trigger resilience_schema_sql_drop")


def test_without_event_triggers_status_and_watch_say_refresh(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    drop_event_triggers(conn)
    assert any(ONLY_AFTER_REFRESH in line for line in status_lines(conn))
    lines = watch_lines(dsn, conn, "create table t (id int)", "select resilience.schema_refresh()")
    assert any(ONLY_AFTER_REFRESH in line for line in lines)
    assert any("[low] table_added public.t" in line for line in lines)


def test_without_plpython_every_change_shown_has_a_severity(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    drop_plpython_diff(conn)
    conn.execute("create table t (id int, note text)")
    conn.execute("alter table t drop column note")
    lines = status_lines(conn)
    assert any("the client computes" in line for line in lines)
    assert not any(ONLY_AFTER_REFRESH in line for line in lines)
    assert any(line.startswith("last change: 1 change(s), max severity critical") for line in lines)
    history = SchemaVersionManager(dsn).history(2)
    assert [(h["change_count"], h["max_severity"]) for h in history] == [
        (1, "critical"),
        (1, "low"),
    ]
    assert all(h["diffed_in"] == "client" for h in history)
    lines = watch_lines(dsn, conn, "alter table t alter column id set not null")
    assert any("[high] nullability_changed public.t.id" in line for line in lines)


@pytest.mark.plpython
def test_with_both_nothing_extra_is_said(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("create table t (id int)")
    lines = status_lines(conn)
    assert not any(ONLY_AFTER_REFRESH in line or "the client computes" in line for line in lines)
    assert any(line.startswith("last change: 1 change(s), max severity low") for line in lines)


@pytest.mark.plpython
def test_diff_at_commit_on_starts_plpython_at_commit_and_off_never_does(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    assert conn.execute(
        "select value from resilience.settings where name = 'schema_diff_at_commit'"
    ).fetchone() == ("on",)  # the default: DESIGN.md's diff at commit
    conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_diff_at_commit'"
    )
    with psycopg.connect(dsn, autocommit=True) as fresh:
        fresh.execute("create table t (id int, note text)")
        fresh.execute("alter table t drop column note")
        # This session's commits never started PL/Python.
        assert not libpython_mapped(fresh.info.backend_pid)
    conn.execute("update resilience.settings set value = 'on' where name = 'schema_diff_at_commit'")
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("create table u (id int)")
        assert libpython_mapped(other.info.backend_pid)  # the check above can see it
    row = conn.execute(
        "select diffed_in, change_count, max_severity from resilience.schema_versions"
        " order by version desc limit 1"
    ).fetchone()
    assert row == ("database", 1, "low")  # rated at its commit
    lines = status_lines(conn)
    assert not any("setting schema_diff_at_commit" in line for line in lines)
    conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_diff_at_commit'"
    )
    lines = status_lines(conn)
    assert any("setting schema_diff_at_commit off" in line for line in lines)
    # A preview leaves the rating to the client, like an unrated version.
    with conn.transaction():
        conn.execute("alter table t add column bio text")
        preview = conn.execute("select resilience.schema_preview()").fetchone()
    assert preview is not None and preview[0]["changes"] is None and preview[0]["deltas"]
