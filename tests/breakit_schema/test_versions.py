"""One committed migration, one version (or one per SET CONSTRAINTS ALL
IMMEDIATE, as documented): nothing lost, nothing left pending, nothing from
a transaction that did not commit. Checked afterwards by a full re-read:
schema_refresh() must find nothing left to record."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgresilience.schema import ChangeList

from .conftest import FOLD_UNLOCK, Tracker, fold_lock, waiting_on_fold_lock


def refresh_finds_nothing(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("select resilience.schema_refresh()").fetchone()
    assert row is not None
    assert row[0]["changed"] is False, row[0]


def tables_of(tracker: Tracker, before: int) -> list[set[str]]:
    return [
        {c["table"] for c in version if c["type"] == "table_added"}
        for version in tracker.since(before)
    ]


def test_set_constraints_all_immediate_mid_migration_loses_nothing(tracker: Tracker) -> None:
    """It folds what came before as its own version (documented); the DDL
    after it is folded at commit, as one more version. Before the fix the
    fold failed (its deltas' deferred key was checked at once: 23503) and the
    DDL after it was never recorded."""
    tracker.conn.execute("create table t (a int primary key)")
    before = tracker.latest()
    with tracker.conn.transaction():
        tracker.conn.execute("drop table t")
        tracker.conn.execute("set constraints all immediate")
        tracker.conn.execute("create table x (a int)")
        tracker.conn.execute("create table y (a int)")
    versions = tracker.since(before)
    assert [[(c["type"], c["table"]) for c in v] for v in versions] == [
        [("table_dropped", "public.t")],
        [("table_added", "public.x"), ("table_added", "public.y")],
    ]
    assert not tracker.warnings
    refresh_finds_nothing(tracker.conn)


def test_set_constraints_all_immediate_before_any_ddl(tracker: Tracker) -> None:
    before = tracker.latest()
    with tracker.conn.transaction():
        tracker.conn.execute("set constraints all immediate")
        tracker.conn.execute("create table q1 (a int)")
        tracker.conn.execute("create table q2 (a int)")
    assert tables_of(tracker, before) == [{"public.q1", "public.q2"}]
    assert not tracker.warnings
    refresh_finds_nothing(tracker.conn)


def test_preview_after_set_constraints_all_immediate(tracker: Tracker) -> None:
    tracker.conn.execute("create table t (a int primary key)")
    with tracker.conn.transaction():
        tracker.conn.execute("drop table t")
        tracker.conn.execute("set constraints all immediate")
        tracker.conn.execute("create table x (a int)")
        row = tracker.conn.execute("select resilience.schema_preview()").fetchone()
        assert row is not None
        preview = row[0]
        assert preview["preview"] is True
        assert preview["tables"] == ["public.x"]


def test_rolled_back_savepoint_and_create_drop_leave_no_trace(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    before = db_tracker.latest()
    with conn.transaction():
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():
                conn.execute("create table gone (a int)")
                conn.execute("select 1 / 0")
        conn.execute("create table temp_kept (a int)")
        conn.execute("drop table temp_kept")
        conn.execute("create table kept (a int)")
        conn.execute("insert into kept values (1)")
    assert tables_of(db_tracker, before) == [{"public.kept"}]
    refresh_finds_nothing(conn)


def test_ddl_from_do_blocks_functions_and_replica_role_is_recorded(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    conn.execute(
        "create function make_it(name text) returns void language plpgsql as"
        " $$ begin execute format('create table %I (a int)', name); end $$"
    )
    before = db_tracker.latest()
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute("do $$ begin execute 'create table \"from do\" (a int)'; end $$")
        conn.execute("select make_it('from function')")
    assert tables_of(db_tracker, before) == [{"public.from do", "public.from function"}]
    refresh_finds_nothing(conn)


def test_two_sessions_migrating_at_once_get_one_version_each(db_tracker: Tracker, dsn: str) -> None:
    """The second commit waits for the first one's fold (held here by the
    fold lock, so that both are at their commit at once)."""
    conn = db_tracker.conn
    before = db_tracker.latest()
    holder = psycopg.connect(dsn, autocommit=True)
    errors: list[BaseException] = []

    def migrate(name: str, pid_box: list[int]) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as other:
                pid_box.append(other.info.backend_pid)
                with other.transaction():
                    other.execute(f"create table {name} (a int)")  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    try:
        fold_lock(holder)
        pids: list[list[int]] = [[], []]
        threads = [
            threading.Thread(target=migrate, args=(name, box))
            for name, box in zip(("first_app", "second_app"), pids, strict=True)
        ]
        for thread in threads:
            thread.start()
        for box in pids:
            for _ in range(600):
                if box:
                    break
                holder.execute("select pg_sleep(0.01)")
            assert box and waiting_on_fold_lock(conn, box[0])
    finally:
        holder.execute(FOLD_UNLOCK)
        for thread in threads:
            thread.join(30)
        holder.close()
    assert not errors
    versions = tables_of(db_tracker, before)
    assert sorted(map(sorted, versions)) == [["public.first_app"], ["public.second_app"]]
    refresh_finds_nothing(conn)


def test_backend_killed_while_its_commit_folds_commits_nothing(
    db_tracker: Tracker, dsn: str
) -> None:
    """Terminated while the commit waits in the fold: after reconnecting,
    neither the DDL nor a version (never one without the other)."""
    conn = db_tracker.conn
    before = db_tracker.latest()
    victim = psycopg.connect(dsn, autocommit=True)
    pid = victim.info.backend_pid
    outcome: list[BaseException] = []

    def migrate() -> None:
        try:
            with victim.transaction():
                victim.execute("create table doomed (a int)")
        except BaseException as exc:
            outcome.append(exc)

    fold_lock(conn)
    thread = threading.Thread(target=migrate)
    thread.start()
    try:
        assert waiting_on_fold_lock(conn, pid)
        conn.execute("select pg_terminate_backend(%s)", (pid,))
    finally:
        conn.execute(FOLD_UNLOCK)
        thread.join(30)
        victim.close()
    assert outcome and isinstance(outcome[0], psycopg.OperationalError)
    row = conn.execute("select to_regclass('public.doomed')").fetchone()
    assert row == (None,)
    assert db_tracker.latest() == before
    refresh_finds_nothing(conn)


def test_lock_timeout_in_the_fold_lets_the_migration_commit(db_tracker: Tracker) -> None:
    """The fold waits for the fold lock (another migration's commit, a
    preview): under the migration's lock_timeout it gives up with a warning,
    the DDL commits, schema_refresh() records it."""
    conn = db_tracker.conn
    holder = psycopg.connect(conn.info.dsn, autocommit=True)
    before = db_tracker.latest()
    try:
        fold_lock(holder)
        with conn.transaction():
            conn.execute("set local lock_timeout = '100ms'")
            conn.execute("create table waited (a int)")
    finally:
        holder.execute(FOLD_UNLOCK)
        holder.close()
    assert conn.execute("select to_regclass('public.waited')").fetchone() == ("waited",)
    assert db_tracker.latest() == before
    assert db_tracker.warnings  # "schema version not recorded", with the cause
    row = conn.execute("select resilience.schema_refresh()").fetchone()
    assert row is not None and row[0]["changed"] is True


def test_preview_twice_then_commit_records_exactly_what_it_previewed(tracker: Tracker) -> None:
    tracker.conn.execute("create table t (a int primary key, b int)")
    before = tracker.latest()
    with tracker.conn.transaction():
        tracker.conn.execute("alter table t drop column b")
        first = tracker.conn.execute("select resilience.schema_preview()").fetchone()
        tracker.conn.execute("alter table t add column c int")
        second = tracker.conn.execute("select resilience.schema_preview()").fetchone()
        assert tracker.latest() == before  # a preview records nothing
    assert first is not None and second is not None
    versions = tracker.since(before)
    assert len(versions) == 1
    committed = versions[0]
    preview = second[0]
    assert preview["version"] == committed.version
    assert preview["hash"] == committed.hash
    previewed = ChangeList.from_row(preview)
    assert sorted(c["type"] for c in previewed) == sorted(c["type"] for c in committed)
    assert sorted(c["type"] for c in committed) == ["column_added", "column_dropped"]
    assert ChangeList.from_row(first[0]).max_severity == "critical"


def test_statement_timeout_in_a_fold_run_by_set_constraints_spares_the_migration(
    db_tracker: Tracker,
) -> None:
    """SET CONSTRAINTS ALL IMMEDIATE folds at once, waiting here for the fold
    lock: the migration's statement_timeout fires in the fold (57014, which
    OTHERS does not catch). Before the fix that failed the statement and the
    whole migration; now the fold gives up with a warning and
    schema_refresh() catches up."""
    conn = db_tracker.conn
    holder = psycopg.connect(conn.info.dsn, autocommit=True)
    try:
        fold_lock(holder)
        with conn.transaction():
            conn.execute("set local statement_timeout = '100ms'")
            conn.execute("create table before_set (a int)")
            conn.execute("set constraints all immediate")
            conn.execute("set local statement_timeout = 0")
            conn.execute("create table after_set (a int)")
    finally:
        holder.execute(FOLD_UNLOCK)
        holder.close()
    row = conn.execute("select to_regclass('before_set'), to_regclass('after_set')").fetchone()
    assert row == ("before_set", "after_set")
    assert db_tracker.warnings
    refreshed = conn.execute("select resilience.schema_refresh()").fetchone()
    assert refreshed is not None and refreshed[0]["changed"] is True
    refresh_finds_nothing(conn)
