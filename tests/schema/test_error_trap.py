"""Where the event triggers' error trap is (docs/schema_tracking.md, "It
never blocks a migration"). A transaction's first tracked DDL runs inside
the trap: it reads the settings, checks for the installer and writes the
schema_pending row. Every later DDL of the transaction only appends to
transaction-local settings, outside the trap (a trap is a subtransaction,
whose end costs O(relations created) in a big migration). These tests try to
make a later statement fail, or lose what it did."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import summary

Tracker = Any  # tests/schema/conftest.py: Tracker


def commands(tracker: Tracker, version: Any) -> list[str]:
    row = tracker.conn.execute(
        "select commands from resilience.schema_versions where version = %s", (version.version,)
    ).fetchone()
    assert row is not None
    return sorted(row[0])


def test_later_statements_read_no_table_of_ours(db_tracker: Tracker) -> None:
    """With the settings and pending tables renamed away mid-migration, the
    later DDL still goes through, without a warning, and is in the version."""
    version = db_tracker.migrate(
        "create table public.first (id int primary key)",
        "alter table resilience.settings rename to settings_away",
        "alter table resilience.schema_pending rename to schema_pending_away",
        "create table public.second (id int primary key, first_id int references public.first)",
        "create index second_first_idx on public.second (first_id)",
        "alter table public.first add column note text",
        "drop table public.first cascade",
        "alter table resilience.settings_away rename to settings",
        "alter table resilience.schema_pending_away rename to schema_pending",
    )
    assert db_tracker.warnings == []
    assert summary(version) == {("table_added", "public.second", None, "low")}


@pytest.mark.parametrize(
    "value", ["garbage", "-1", "0x1", "1e3", "12345678901", " 1", "0", "5", "999999999"]
)
def test_a_pending_count_we_did_not_write_is_not_trusted(db_tracker: Tracker, value: str) -> None:
    """A value of the internal setting that is no chunk count of ours makes
    the DDL a first one: it writes the pending row, and the version is exact."""
    conn = db_tracker.conn
    before = db_tracker.latest()
    with conn.transaction():
        conn.execute("select set_config('resilience.schema_pending_n', %s, true)", (value,))
        conn.execute("create table public.kept (id int primary key)")
        conn.execute("alter table public.kept add column note text")
    (version,) = db_tracker.since(before)
    assert summary(version) == {("table_added", "public.kept", None, "low")}
    assert db_tracker.warnings == []


def test_a_first_ddl_rolled_back_to_a_savepoint_leaves_the_next_one_trapped(
    db_tracker: Tracker,
) -> None:
    """The rolled-back savepoint takes the pending row and the count with it:
    the next DDL is a first one again, writes the row, and the version has
    exactly what committed."""
    conn = db_tracker.conn
    before = db_tracker.latest()
    with conn.transaction():
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("create table public.gone (id int primary key)")
            conn.execute("create table public.gone_too (id int primary key)")
            conn.execute("insert into public.gone values (1), (1)")
        conn.execute("create table public.stays (id int primary key)")
        conn.execute("alter table public.stays add column note text")
    (version,) = db_tracker.since(before)
    assert summary(version) == {("table_added", "public.stays", None, "low")}
    assert db_tracker.warnings == []


def test_reset_all_mid_migration_loses_nothing(db_tracker: Tracker) -> None:
    """RESET ALL clears the count: the next DDL goes through the trap again,
    finds its row already written, and marks the fold for a full re-read."""
    version = db_tracker.migrate(
        "create table public.before_reset (id int primary key)",
        "reset all",
        "create table public.after_reset (id int primary key)",
        "alter table public.before_reset add column note text",
    )
    assert summary(version) == {
        ("table_added", "public.before_reset", None, "low"),
        ("table_added", "public.after_reset", None, "low"),
    }


def test_tracking_switched_off_mid_migration_applies_from_the_next_one(
    db_tracker: Tracker,
) -> None:
    """The setting is read at a transaction's first tracked DDL: switched off
    inside a migration, it leaves that migration whole and stops the next."""
    conn = db_tracker.conn
    version = db_tracker.migrate(
        "create table public.a (id int primary key)",
        "update resilience.settings set value = 'off' where name = 'schema_tracking'",
        "create table public.b (id int primary key)",
    )
    assert summary(version) == {
        ("table_added", "public.a", None, "low"),
        ("table_added", "public.b", None, "low"),
    }
    db_tracker.nothing_recorded("create table public.c (id int primary key)")
    conn.execute("update resilience.settings set value = 'on' where name = 'schema_tracking'")


def test_a_thousand_statements_after_the_first_are_one_exact_version(
    db_tracker: Tracker,
) -> None:
    """Chunks roll over (about 32 kB each) on the appending path too."""
    statements = [f"create table public.t{i} (id int primary key, v text)" for i in range(600)]
    statements += [f"alter table public.t{i} rename column v to w" for i in range(0, 600, 2)]
    statements += [f"drop table public.t{i}" for i in range(1, 600, 2)]
    version = db_tracker.migrate(*statements)
    assert summary(version) == {
        ("table_added", f"public.t{i}", None, "low") for i in range(0, 600, 2)
    }
    row = db_tracker.conn.execute(
        "select count(*) from resilience.schema_objects where kind = 'column'"
        " and data->>'name' = 'w'"
    ).fetchone()
    assert row == (300,)


def test_a_pending_count_changed_mid_migration_costs_a_reread_not_a_long_commit(
    db_tracker: Tracker,
) -> None:
    """A count past the chunks written is not trusted: the next DDL is a
    first one again (the commit re-reads everything), and the commit reads
    the chunks that exist, not 999,999,999 of them."""
    conn = db_tracker.conn
    conn.execute("set statement_timeout = '60s'")
    version = db_tracker.migrate(
        "create table public.a (id int primary key)",
        "select set_config('resilience.schema_pending_n', '999999999', true)",
        "create table public.b (id int primary key)",
    )
    assert summary(version) == {
        ("table_added", "public.a", None, "low"),
        ("table_added", "public.b", None, "low"),
    }


@pytest.mark.parametrize(
    "statement",
    [
        "create index t_v on public.t (v) -- not create index concurrently: in a transaction",
        "/* create index concurrently t_v cannot run here */ create index t_v on public.t (v)",
    ],
)
def test_a_comment_naming_concurrently_leaves_a_plain_index_plain(
    db_tracker: Tracker, statement: str
) -> None:
    """First in its transaction (the only statement the query text is asked
    of), a plain CREATE INDEX whose comment mentions CONCURRENTLY is rated
    as the plain form."""
    db_tracker.conn.execute("create table public.t (id int primary key, v int)")
    version = db_tracker.migrate(statement)
    assert summary(version) == {("index_added", "public.t", None, "medium")}
    assert commands(db_tracker, version) == ["CREATE INDEX"]


def test_concurrently_after_a_comment_is_still_concurrently(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    conn.execute("create table public.t (id int primary key, v int)")
    before = db_tracker.latest()
    conn.execute("-- the big one\n/* writes go on */ create index concurrently t_v on public.t (v)")
    (version,) = db_tracker.since(before)
    assert summary(version) == {("index_added", "public.t", None, "low")}
    assert commands(db_tracker, version) == ["CREATE INDEX CONCURRENTLY"]


def test_a_later_create_index_never_reads_the_query_text(db_tracker: Tracker) -> None:
    """One query string holding a migration and its seed data (here 20 MB):
    a CREATE INDEX after the first DDL does not scan the text, and is rated
    as the plain form even though the text names CONCURRENTLY."""
    conn = db_tracker.conn
    blob = "create index concurrently " * 800_000
    before = db_tracker.latest()
    conn.execute(
        "create table public.seeded (id int primary key, doc text);"
        f" insert into public.seeded values (1, '{blob}');"
        " create index seeded_doc on public.seeded (left(doc, 10));"
    )
    (version,) = db_tracker.since(before)
    assert commands(db_tracker, version) == ["CREATE INDEX", "CREATE TABLE"]
    assert ("index_added", "public.seeded", None, "medium") not in summary(version)
