"""What v2 tracks that v1 missed (DESIGN.md section 2, issue 12 item 3):
DETACH PARTITION, DDL under session_replication_role = replica, view
options, CREATE INDEX CONCURRENTLY, invalid indexes, DROP NOT NULL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import summary

Tracker = Any  # tests/schema/conftest.py: Tracker


def test_detach_and_attach_partition_are_versions(tracker: Tracker) -> None:
    tracker.migrate(
        "create table events (id int, at date) partition by range (at)",
        "create table events_2025 partition of events"
        " for values from ('2025-01-01') to ('2026-01-01')",
    )
    detached = tracker.migrate("alter table events detach partition events_2025")
    assert summary(detached) == {("table_changed", "public.events_2025", None, "high")}
    attached = tracker.migrate(
        "alter table events attach partition events_2025 "
        "for values from ('2025-01-01') to ('2026-01-01')"
    )
    assert summary(attached) == {("table_changed", "public.events_2025", None, "medium")}
    assert tracker.conn.execute("select resilience.schema_refresh()->'changed'").fetchone() == (
        False,
    )


def test_ddl_under_replica_mode_is_tracked(db_tracker: Tracker) -> None:
    """Event triggers and the commit-time fold are ENABLE ALWAYS."""
    conn = db_tracker.conn
    enabled = conn.execute(
        "select evtname, evtenabled from pg_event_trigger where evtname like 'resilience_schema_%'"
    ).fetchall()
    assert sorted(enabled) == [
        ("resilience_schema_ddl_end", "A"),
        ("resilience_schema_sql_drop", "A"),
    ]
    db_tracker.migrate("create table t (id int)")
    conn.execute("set session_replication_role = replica")
    changes = db_tracker.migrate(
        "alter table t add column note text", "alter table t drop column id"
    )
    assert summary(changes) == {
        ("column_added", "public.t", "note", "low"),
        ("column_dropped", "public.t", "id", "critical"),
    }
    conn.execute("reset session_replication_role")
    # Nothing was missed: the next migration reports only its own change.
    assert summary(db_tracker.migrate("create index on t (note)")) == {
        ("index_added", "public.t", None, "medium")
    }


@pytest.mark.min_server_version(15, reason="security_invoker views")
def test_security_invoker_turned_off_over_an_rls_table_is_critical(tracker: Tracker) -> None:
    tracker.migrate(
        "create table secrets (id int, owner text)",
        "alter table secrets enable row level security",
        "create view my_secrets with (security_invoker = true) as select id from secrets",
        "create table plain (id int)",
        "create view plain_ids with (security_invoker = true) as select id from plain",
    )
    before = tracker.hash()
    off = tracker.migrate("alter view my_secrets set (security_invoker = false)")
    assert summary(off) == {("view_changed", "public.my_secrets", None, "critical")}
    assert off[0]["old_value"] == {"security_invoker": True}
    assert tracker.hash() != before
    # Over a table without RLS, the same switch is an option change.
    plain = tracker.migrate("alter view plain_ids reset (security_invoker)")
    assert summary(plain) == {("view_changed", "public.plain_ids", None, "medium")}


@pytest.mark.parametrize(
    "statement",
    [
        "alter view v set (security_barrier = true)",
        "alter view v set (check_option = local)",
        pytest.param(
            "alter view v set (security_invoker = on)",
            marks=pytest.mark.min_server_version(15, reason="security_invoker views"),
        ),
    ],
)
def test_view_options_are_in_the_snapshot_and_the_hash(tracker: Tracker, statement: str) -> None:
    tracker.migrate("create table t (id int)", "create view v as select id from t")
    before = tracker.hash()
    changes = tracker.migrate(statement)
    assert summary(changes) == {("view_changed", "public.v", None, "medium")}
    assert tracker.hash() != before


def test_create_index_concurrently_is_rated_below_the_plain_form(tracker: Tracker) -> None:
    tracker.migrate("create table t (a int, b int)")
    before = tracker.latest()
    tracker.conn.execute("create index concurrently t_a_idx on t (a)")
    tracker.conn.execute("create index t_b_idx on t (b)")
    concurrent, plain = tracker.since(before)
    assert summary(concurrent) == {("index_added", "public.t", None, "low")}
    assert summary(plain) == {("index_added", "public.t", None, "medium")}
    assert concurrent[0]["rule"] == "index_added_concurrently"


def test_an_invalid_index_left_by_a_failed_concurrently_is_reported(tracker: Tracker) -> None:
    tracker.migrate("create table t (email text)")
    tracker.conn.execute("insert into t values ('a'), ('a')")
    before = tracker.latest()
    with pytest.raises(psycopg.errors.UniqueViolation):
        tracker.conn.execute("create unique index concurrently t_email_key on t (email)")
    assert tracker.latest() == before  # the failed command fired no event trigger
    tracker.conn.execute("select resilience.schema_refresh()")
    [version] = tracker.since(before)
    assert summary(version) == {("index_invalid", "public.t", None, "high")}
    # Dropped and built again once the duplicate is gone: a valid index.
    tracker.conn.execute("delete from t where ctid = (select max(ctid) from t)")
    tracker.conn.execute("drop index t_email_key")
    tracker.conn.execute("create unique index concurrently t_email_key on t (email)")
    [dropped, rebuilt] = tracker.since(before + 1)
    assert summary(dropped) == {("index_dropped", "public.t", None, "high")}
    assert summary(rebuilt) == {("index_added", "public.t", None, "low")}


def test_drop_not_null_is_medium(tracker: Tracker) -> None:
    tracker.migrate("create table t (id int not null)")
    changes = tracker.migrate("alter table t alter column id drop not null")
    assert summary(changes) == {("nullability_changed", "public.t", "id", "medium")}
    assert changes[0]["rule"] == "drop_not_null"


@pytest.mark.plpython
def test_the_diff_module_is_compiled_once_and_loaded_by_later_sessions(
    db_tracker: Tracker, dsn: str
) -> None:
    conn = db_tracker.conn
    db_tracker.migrate("create table t (id int)")
    key, sha = conn.execute(
        "select bytecode_key, sha256 from resilience.plpython_modules where name = 'schema_diff'"
    ).fetchone() or (None, None)
    assert key is not None and key.startswith(f"{sha}:")
    # Stale compiled code (another source) is never used: compiled again.
    conn.execute(
        "update resilience.plpython_modules set bytecode = 'junk', bytecode_key = 'other'"
        " where name = 'schema_diff'"
    )
    with psycopg.connect(dsn, autocommit=True) as fresh:
        fresh.execute("alter table t add column note text")
        # Its first reader rates it (the commit does not, by default).
        fresh.execute("select resilience.schema_changes_since(0)")
    [version] = db_tracker.since(db_tracker.latest() - 1)
    assert summary(version) == {("column_added", "public.t", "note", "low")}
    assert conn.execute(
        "select bytecode_key from resilience.plpython_modules where name = 'schema_diff'"
    ).fetchone() == (key,)
