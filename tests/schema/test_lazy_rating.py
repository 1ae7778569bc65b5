"""With setting schema_diff_at_commit off a migration's commit records
its version (snapshot, hash, deltas) without starting PL/Python, and the
version's first reader rates it with the same module, once: the rating is
stored, a concurrent reader waits for it instead of rating again, and every
reader (SQL API, SchemaVersionManager, status, watch) sees severities."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from alembic import command

from pgresilience import installer
from pgresilience.schema import ChangeList, SchemaVersionManager
from pgresilience.schema.status import status_lines

from .conftest import libpython_mapped, summary, watch_lines

pytestmark = pytest.mark.plpython


@pytest.fixture(autouse=True)
def rated_at_first_read(conn: psycopg.Connection[Any]) -> None:
    """The setting these tests are about (the default is the diff at commit)."""
    conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_diff_at_commit'"
    )


SENTINEL = (
    "update resilience.schema_versions set changes = '[]', change_count = 0, max_severity = null"
)


def commit_unrated(dsn: str, *statements: str) -> int:
    """Run ``statements`` (autocommit) in a new session; the last version."""
    with psycopg.connect(dsn, autocommit=True) as fresh:
        for statement in statements:
            fresh.execute(statement)  # type: ignore[arg-type]  # literal test SQL
        assert not libpython_mapped(fresh.info.backend_pid)
        row = fresh.execute("select max(version) from resilience.schema_versions").fetchone()
    assert row is not None
    return int(row[0])


def stored(conn: psycopg.Connection[Any], version: int) -> tuple[Any, ...]:
    row = conn.execute(
        "select diffed_in, change_count, max_severity from resilience.schema_versions"
        " where version = %s",
        (version,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def since(conn: psycopg.Connection[Any], version: int) -> list[ChangeList]:
    rows = conn.execute("select resilience.schema_changes_since(%s)", (version,)).fetchall()
    return [ChangeList.from_row(r[0]) for r in rows]


def test_the_commit_stores_an_unrated_version_and_says_so(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("create table t (id int, note text)")
    conn.execute("listen resilience_schema")
    version = commit_unrated(dsn, "alter table t drop column note")
    assert stored(conn, version) == ("client", None, None)
    [notify] = list(conn.notifies(timeout=5, stop_after=1))
    message = json.loads(notify.payload)
    assert message["version"] == version
    assert (message["rated"], message["max_severity"], message["change_count"]) == (
        False,
        None,
        None,
    )
    # The audit row carries what was known at commit.
    row = conn.execute(
        "select detail from resilience.audit_log where event = 'schema_change'"
        " and (detail->>'version')::bigint = %s",
        (version,),
    ).fetchone()
    assert row is not None and row[0]["max_severity"] is None


def test_the_first_reader_rates_a_version_once(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("create table t (id int, note text)")
    version = commit_unrated(dsn, "alter table t drop column note")
    with psycopg.connect(dsn, autocommit=True) as reader:
        [changes] = since(reader, version - 1)
    assert changes.diffed_in == "database"
    assert summary(changes) == {("column_dropped", "public.t", "note", "critical")}
    assert stored(conn, version) == ("database", 1, "critical")
    # Stored: a later reader gets the stored rating, never a new one.
    conn.execute(SENTINEL + " where version = %s", (version,))
    [again] = since(conn, version - 1)
    assert (list(again), again.max_severity) == ([], None)


def test_schema_history_rates_the_versions_it_returns(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    first = commit_unrated(dsn, "create table t (id int)")
    second = commit_unrated(dsn, "alter table t alter column id set not null")
    rows = [r[0] for r in conn.execute("select resilience.schema_history(1)").fetchall()]
    assert [(r["version"], r["diffed_in"], r["max_severity"]) for r in rows] == [
        (second, "database", "high")
    ]
    assert stored(conn, first) == ("client", None, None)  # outside the window: left for later
    assert SchemaVersionManager(dsn).history(2)[1]["max_severity"] == "low"
    assert stored(conn, first) == ("database", 1, "low")


def test_concurrent_readers_do_not_rate_twice(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("create table t (id int)")
    version = commit_unrated(dsn, "alter table t add column note text")
    results: list[list[ChangeList]] = []
    with (
        psycopg.connect(dsn) as first,
        psycopg.connect(dsn, autocommit=True) as second,
    ):
        assert since(first, version - 1)[0].max_severity == "low"  # rated, row locked
        # Marks the first reader's rating: a second rating would overwrite it.
        first.execute(SENTINEL + " where version = %s", (version,))
        thread = threading.Thread(target=lambda: results.append(since(second, version - 1)))
        thread.start()
        waiting = None
        for _ in range(200):
            waiting = conn.execute(
                "select wait_event_type from pg_stat_activity where pid = %s",
                (second.info.backend_pid,),
            ).fetchone()
            if waiting == ("Lock",):
                break
            time.sleep(0.05)
        assert waiting == ("Lock",)  # waits for the first reader's rating
        first.commit()
        thread.join(10)
    [[changes]] = results
    assert (list(changes), changes.diffed_in) == ([], "database")


def test_schema_history_of_no_version_rates_nothing(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    version = commit_unrated(dsn, "create table t (id int)")
    assert conn.execute("select resilience.schema_history(0)").fetchall() == []
    assert stored(conn, version) == ("client", None, None)


def test_a_reader_idle_in_its_transaction_never_blocks_another_for_good(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("create table t (id int, note text)")
    version = commit_unrated(dsn, "alter table t drop column note")
    with psycopg.connect(dsn) as idle:
        since(idle, version - 1)  # rated, row locked, transaction left open
        # The other reader waits a bounded time, then rates its own copy.
        [changes] = since(conn, version - 1)
        assert (changes.diffed_in, changes.max_severity) == ("client", "critical")
        idle.rollback()
    assert stored(conn, version) == ("client", None, None)


def test_a_read_only_reader_gets_the_deltas_and_rates_nothing(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("create table t (id int, note text)")
    version = commit_unrated(dsn, "alter table t drop column note")
    with psycopg.connect(dsn) as reader:
        reader.execute("set transaction read only")
        [row] = [
            r[0]
            for r in reader.execute(
                "select resilience.schema_changes_since(%s)", (version - 1,)
            ).fetchall()
        ]
        reader.rollback()
    assert row["changes"] is None and row["deltas"]
    # The client rates the deltas with the same module.
    assert ChangeList.from_row(row).max_severity == "critical"
    assert stored(conn, version) == ("client", None, None)


def test_listeners_status_and_watch_see_severities(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("create table t (id int, note text)")
    received: list[ChangeList] = []
    with SchemaVersionManager(dsn) as manager:
        manager.initialize()
        manager.on_schema_change(received.append)
        assert manager.wait_listening()
        version = commit_unrated(dsn, "alter table t drop column note")
        for _ in range(200):
            if received:
                break
            time.sleep(0.05)
    [changes] = received
    assert (changes.version, changes.max_severity, changes.diffed_in) == (
        version,
        "critical",
        "database",
    )
    lines = status_lines(conn)
    assert any("rated when first read" in line for line in lines)
    assert any(line.startswith("last change: 1 change(s), max severity critical") for line in lines)
    lines = watch_lines(dsn, conn, "alter table t alter column id set not null")
    assert any("rated when first read" in line for line in lines)
    assert any("[high] nullability_changed public.t.id" in line for line in lines)


def setting(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "select value from resilience.settings where name = 'schema_diff_at_commit'"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_revision_0008_keeps_the_installed_setting(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """0008 describes the setting's two values and changes neither: an
    upgrade keeps the diff at commit (DESIGN.md), or the off a user chose."""
    conn.execute("update resilience.settings set value = 'on' where name = 'schema_diff_at_commit'")
    with installer._connect(dsn) as (sa_conn, _raw):
        command.downgrade(installer._alembic_config(sa_conn), "0007")
    assert setting(conn) == "on"
    with installer._connect(dsn) as (sa_conn, _raw):
        command.upgrade(installer._alembic_config(sa_conn), "head")
    assert setting(conn) == "on"
    conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_diff_at_commit'"
    )
    with installer._connect(dsn) as (sa_conn, _raw):
        command.downgrade(installer._alembic_config(sa_conn), "0007")
        command.upgrade(installer._alembic_config(sa_conn), "head")
    assert setting(conn) == "off"
