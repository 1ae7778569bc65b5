"""Schema version tracking against a real PostgreSQL (DESIGN.md section 2).

Each committed transaction that changes tracked objects becomes ONE version;
its changes carry type, table, column, old/new value, severity and reason.
Tests marked with the `tracker` fixture run twice: with the diff computed by
PL/Python at commit, and computed by the client from the stored deltas.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgresilience import installer
from pgresilience.schema import diff

from .conftest import summary

Tracker = Any  # tests/schema/conftest.py: Tracker
Server = Any  # tests/conftest.py: Server


def payload(notify: Any) -> dict[str, Any]:
    return dict(json.loads(notify.payload))


USERS = (
    "create table public.users (id bigint generated always as identity primary key, "
    "email text not null, name text, age integer)"
)


def test_every_change_type_with_its_severity(tracker: Tracker) -> None:
    """One migration per change type, in order, each checked for its record."""
    steps: list[tuple[list[str], set[tuple[Any, ...]]]] = [
        ([USERS], {("table_added", "public.users", None, "low")}),
        (["alter table users add column nickname text"],
         {("column_added", "public.users", "nickname", "low")}),
        (["alter table users add column status text not null default 'active'"],
         {("column_added", "public.users", "status", "low")}),
        (["alter table users add column token uuid default gen_random_uuid()"],
         {("column_added", "public.users", "token", "high")}),
        (["alter table users alter column age type bigint"],
         {("column_type_changed", "public.users", "age", "high")}),
        (["alter table users alter column name type varchar(50)",
          "alter table users alter column name type varchar(80)"],
         {("column_type_changed", "public.users", "name", "high")}),
        (["alter table users alter column name type varchar(100)"],
         {("column_type_changed", "public.users", "name", "low")}),
        (["alter table users alter column nickname set not null"],
         {("nullability_changed", "public.users", "nickname", "high")}),
        (["alter table users alter column nickname drop not null"],
         {("nullability_changed", "public.users", "nickname", "medium")}),
        (["alter table users alter column nickname set default 'anon'"],
         {("default_changed", "public.users", "nickname", "low")}),
        (["alter table users rename column name to full_name"],
         {("column_renamed", "public.users", "full_name", "high")}),
        (["alter table users add constraint age_positive check (age > 0)"],
         {("constraint_added", "public.users", None, "medium")}),
        (["alter table users add constraint email_key unique (email)"],
         {("constraint_added", "public.users", None, "medium")}),
        (["alter table users drop constraint email_key"],
         {("constraint_dropped", "public.users", None, "high")}),
        (["create index users_age_idx on users (age)"],
         {("index_added", "public.users", None, "medium")}),
        (["alter index users_age_idx rename to users_age_index"],
         {("index_renamed", "public.users", None, "low")}),
        (["drop index users_age_index"], {("index_dropped", "public.users", None, "medium")}),
        (["alter table users enable row level security"],
         {("rls_changed", "public.users", None, "high")}),
        (["create policy own on users for select to authenticated using (age > 18)"],
         {("policy_changed", "public.users", None, "medium")}),
        (["alter policy own on users using (age > 21)"],
         {("policy_changed", "public.users", None, "high")}),
        (["alter policy own on users using (true)"],
         {("policy_changed", "public.users", None, "critical")}),
        (["drop policy own on users"], {("policy_changed", "public.users", None, "high")}),
        (["alter table users disable row level security"],
         {("rls_changed", "public.users", None, "critical")}),
        (["alter table users drop constraint users_pkey"],
         {("primary_key_changed", "public.users", None, "high")}),
        (["alter table users add primary key (id)"],
         {("primary_key_changed", "public.users", None, "high")}),
        (["alter table users drop column nickname"],
         {("column_dropped", "public.users", "nickname", "critical")}),
        (["alter table users rename to people"],
         {("table_renamed", "public.people", None, "high")}),
        (["create view adults as select id, full_name from people where age >= 18"],
         {("view_added", "public.adults", None, "low")}),
        (["create or replace view adults as select id, full_name from people where age >= 21"],
         {("view_changed", "public.adults", None, "medium")}),
        (["drop view adults"], {("view_dropped", "public.adults", None, "high")}),
        (["create function add(a int, b int) returns int language sql as 'select a + b'"],
         {("function_added", None, None, "low")}),
        (["create or replace function add(a int, b int) returns int language sql "
          "as 'select a + b + 0'"], {("function_changed", None, None, "medium")}),
        (["drop function add(int, int)"], {("function_dropped", None, None, "high")}),
        (["create type mood as enum ('sad', 'ok')"], {("enum_added", None, None, "low")}),
        (["alter type mood add value 'happy'"], {("enum_changed", None, None, "low")}),
        (["alter type mood rename value 'sad' to 'blue'"], {("enum_changed", None, None, "high")}),
        (["drop type mood"], {("enum_dropped", None, None, "medium")}),
        (["drop table people"], {("table_dropped", "public.people", None, "critical")}),
    ]  # fmt: skip
    for statements, expected in steps:
        changes = tracker.migrate(*statements)
        assert summary(changes) == expected, statements
        assert changes.max_severity == max(
            (e[3] for e in expected), key=["low", "medium", "high", "critical"].index
        )
    # The incremental snapshot equals a full re-read: nothing left to find.
    assert tracker.conn.execute("select resilience.schema_refresh()->'changed'").fetchone() == (
        False,
    )


def test_type_change_says_whether_it_rewrites_the_table(tracker: Tracker) -> None:
    tracker.migrate("create table t (a integer, b varchar(10))")
    changes = tracker.migrate(
        "alter table t alter column a type bigint", "alter table t alter column b type text"
    )
    by_column = {c["column"]: c for c in changes}
    assert by_column["a"]["rewrites_table"] is True
    assert by_column["b"]["rewrites_table"] is False


def test_a_300_statement_migration_is_one_version(tracker: Tracker) -> None:
    tables = [sql.Identifier(f"t{i}") for i in range(100)]
    statements = [sql.SQL("create table {} (id int primary key)").format(t) for t in tables]
    statements += [sql.SQL("alter table {} add column note text").format(t) for t in tables]
    statements += [
        sql.SQL("create index {} on {} (note)").format(sql.Identifier(f"t{i}_note_idx"), t)
        for i, t in enumerate(tables)
    ]
    changes = tracker.migrate(*statements)
    assert len(changes) == 100  # a new table's columns and indexes are part of table_added
    assert {c["type"] for c in changes} == {"table_added"}
    assert len(changes.tables) == 100
    # The new table's columns are listed in its record.
    t0 = next(c for c in changes if c["table"] == "public.t0")
    assert [col["name"] for col in t0["new_value"]["columns"]] == ["id", "note"]


def test_each_autocommit_ddl_is_its_own_version(db_tracker: Tracker) -> None:
    before = db_tracker.latest()
    db_tracker.conn.execute(USERS)
    db_tracker.conn.execute("alter table users add column bio text")
    db_tracker.conn.execute("create index on users (bio)")
    assert [len(v) for v in db_tracker.since(before)] == [1, 1, 1]
    assert db_tracker.latest() == before + 3


def test_concurrent_migrations_get_one_version_each_in_commit_order(
    db_tracker: Tracker, dsn: str
) -> None:
    """Folds are serialized at commit: every version's hash covers the others'."""
    before = db_tracker.latest()
    ready = threading.Barrier(4)

    def migrate(name: str) -> None:
        with psycopg.connect(dsn) as conn:  # one transaction, committed on exit
            table = sql.Identifier(name)
            conn.execute(sql.SQL("create table {} (id int primary key)").format(table))
            conn.execute(sql.SQL("create index on {} (id)").format(table))
            ready.wait()

    threads = [threading.Thread(target=migrate, args=(f"par{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = db_tracker.since(before)
    assert [v.version for v in versions] == [before + 1, before + 2, before + 3, before + 4]
    assert sorted(v[0]["table"] for v in versions) == [f"public.par{i}" for i in range(4)]
    refreshed = db_tracker.conn.execute("select resilience.schema_refresh()").fetchone()
    assert refreshed is not None and refreshed[0]["changed"] is False
    assert refreshed[0]["hash"] == versions[-1].hash


def test_rolled_back_ddl_records_nothing(db_tracker: Tracker) -> None:
    before = db_tracker.latest()
    with pytest.raises(psycopg.errors.DivisionByZero):
        with db_tracker.conn.transaction():
            db_tracker.conn.execute(USERS)
            db_tracker.conn.execute("select 1/0")
    assert db_tracker.latest() == before


def test_ddl_in_a_rolled_back_savepoint_is_forgotten(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    before = db_tracker.latest()
    with conn.transaction():
        conn.execute("create table kept (id int)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():  # a savepoint
                conn.execute("create table undone (id int)")
                conn.execute("select 1/0")
        conn.execute("alter table kept add column note text")
    [version] = db_tracker.since(before)
    assert summary(version) == {("table_added", "public.kept", None, "low")}
    # Also when the rolled-back savepoint held the transaction's first DDL.
    with conn.transaction():
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():
                conn.execute("create table undone (id int)")
                conn.execute("select 1/0")
        conn.execute("create table kept_too (id int)")
    [version] = db_tracker.since(before + 1)
    assert summary(version) == {("table_added", "public.kept_too", None, "low")}


def test_renames_are_renames_not_drop_plus_add(tracker: Tracker) -> None:
    tracker.migrate(USERS, "create view user_names as select id, name from users")
    changes = tracker.migrate(
        "alter table users rename to members", "alter table members rename column name to nick"
    )
    # The view now reads members.nick: its text changed only because of the renames.
    assert summary(changes) == {
        ("table_renamed", "public.members", None, "high"),
        ("column_renamed", "public.members", "nick", "high"),
    }
    renamed = next(c for c in changes if c["type"] == "table_renamed")
    assert (renamed["old_value"], renamed["new_value"]) == ("public.users", "public.members")


def test_renaming_a_type_re_reads_the_columns_that_use_it(tracker: Tracker) -> None:
    tracker.migrate("create type mood as enum ('sad', 'ok')", "create table t (m mood)")
    changes = tracker.migrate("alter type mood rename to feeling")
    assert summary(changes) == {("enum_changed", None, None, "high")}
    # The column's stored type text was refreshed too: a full re-read agrees.
    assert tracker.conn.execute("select resilience.schema_refresh()->'changed'").fetchone() == (
        False,
    )


def test_schema_move_and_schema_rename(db_tracker: Tracker) -> None:
    db_tracker.migrate("create schema app", "create table app.items (id int)")
    moved = db_tracker.migrate("alter table app.items set schema public")
    assert summary(moved) == {("table_renamed", "public.items", None, "high")}
    db_tracker.migrate("create table app.orders (id int)")
    renamed = db_tracker.migrate("alter schema app rename to shop")
    assert summary(renamed) == {("table_renamed", "shop.orders", None, "high")}


def test_drop_table_with_dependents_reports_what_went_with_it(tracker: Tracker) -> None:
    tracker.migrate(
        USERS,
        "create table orders (id int primary key, user_id bigint references users (id))",
        "create view user_emails as select email from users",
    )
    changes = tracker.migrate("drop table users cascade")
    assert summary(changes) == {
        ("table_dropped", "public.users", None, "critical"),
        ("constraint_dropped", "public.orders", None, "medium"),
        ("view_dropped", "public.user_emails", None, "high"),
    }
    dropped = next(c for c in changes if c["type"] == "table_dropped")
    assert "orders_user_id_fkey" in dropped["reason"]
    assert "public.user_emails" in dropped["reason"]


def test_notify_at_commit_with_small_payload_and_postgrest_reload(
    db_tracker: Tracker, dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_schema")
        listener.execute("listen pgrst")
        db_tracker.conn.execute(USERS)
        got = list(listener.notifies(timeout=5, stop_after=2))
        by_channel = {n.channel: n for n in got}
        assert by_channel["pgrst"].payload == "reload schema"
        message = payload(by_channel["resilience_schema"])
        assert message["version"] == db_tracker.latest()
        assert message["hash"] == db_tracker.hash()
        # By default the commit diffs (DESIGN.md), where PL/Python can: the
        # figures are in the payload; without it the client rates later.
        figures = ("low", 1, True) if db_tracker.mode == "database" else (None, None, False)
        assert (message["max_severity"], message["change_count"], message["rated"]) == figures
        assert message["tables"] == ["public.users"]

        db_tracker.conn.execute("update resilience.settings set value = 'off' "
                                "where name = 'notify_postgrest'")  # fmt: skip
        db_tracker.conn.execute("update resilience.settings set value = 'off' "
                                "where name = 'schema_diff_at_commit'")  # fmt: skip
        db_tracker.conn.execute("alter table users add column bio text")
        got = list(listener.notifies(timeout=2, stop_after=2))
        assert [n.channel for n in got] == ["resilience_schema"]
        # Rated at the first read (setting off): no figures to announce yet,
        # and the payload says so.
        message = payload(got[0])
        assert (message["max_severity"], message["change_count"], message["rated"]) == (
            None,
            None,
            False,
        )


def test_notify_payload_stays_under_8000_bytes(db_tracker: Tracker, dsn: str) -> None:
    long = "t" * 55
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_schema")
        db_tracker.migrate(
            *[
                sql.SQL("create table {} (id int)").format(sql.Identifier(f"{long}{i:03d}"))
                for i in range(300)
            ]
        )
        [notify] = list(listener.notifies(timeout=5, stop_after=1))
    assert len(notify.payload.encode()) < 8000
    message = payload(notify)
    rated = db_tracker.mode == "database"  # diffed at commit where PL/Python runs
    assert (message["change_count"], message["rated"]) == ((300, True) if rated else (None, False))
    assert message["tables_truncated"] is True
    assert 0 < len(message["tables"]) < 300


def test_temp_extension_and_own_objects_are_ignored(db_tracker: Tracker) -> None:
    db_tracker.nothing_recorded("create temp table scratch (id int)", "drop table scratch")
    db_tracker.nothing_recorded("create extension citext")
    db_tracker.nothing_recorded("create table resilience.scratch (id int)",
                                "drop table resilience.scratch")  # fmt: skip
    before = db_tracker.latest()
    # DDL in pgresilience's installer transaction (it holds the install lock) is
    # not tracked, and leaves no commit-time trigger pending on our tables.
    with db_tracker.conn.transaction():
        db_tracker.conn.execute("select pg_advisory_xact_lock(hashtext('pgresilience-install'))")
        db_tracker.conn.execute("create table public.made_by_installer (id int)")
        db_tracker.conn.execute("alter table resilience.schema_pending enable row level security")
    assert db_tracker.latest() == before
    # Reinstalling pgresilience (which recreates its rpc() wrappers) records nothing.
    installer.install(db_tracker.conn.info.dsn)
    assert db_tracker.latest() == before


def test_untracked_schemas_by_setting(db_tracker: Tracker) -> None:
    db_tracker.conn.execute("update resilience.settings set value = 'app' "
                            "where name = 'schema_tracked_schemas'")  # fmt: skip
    db_tracker.nothing_recorded("create table public.not_tracked (id int)")
    changes = db_tracker.migrate("create schema app", "create table app.tracked (id int)")
    assert summary(changes) == {("table_added", "app.tracked", None, "low")}


def test_schema_changes_are_audited(db_tracker: Tracker) -> None:
    db_tracker.conn.execute(USERS)
    row = db_tracker.conn.execute(
        "select actor_role, detail from resilience.audit_log where event = 'schema_change' "
        "order by id desc limit 1"
    ).fetchone()
    assert row is not None
    actor, detail = row
    assert actor == "postgres"
    assert detail["version"] == db_tracker.latest()
    assert detail["tables"] == ["public.users"]
    assert "CREATE TABLE" in detail["commands"]


def test_tracking_broken_on_purpose_does_not_block_ddl(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    before = db_tracker.latest()
    # Break the commit-time fold: its snapshot table is gone.
    conn.execute("alter table resilience.schema_objects rename to schema_objects_broken")
    conn.execute(USERS)  # commits despite the failure
    assert conn.execute("select to_regclass('public.users') is not null").fetchone() == (True,)
    assert any("schema version not recorded" in w for w in db_tracker.warnings)
    # Break the event trigger itself: its pending table is gone.
    conn.execute("alter table resilience.schema_pending rename to schema_pending_broken")
    conn.execute("alter table users add column bio text")
    assert any("schema tracking skipped" in w for w in db_tracker.warnings)
    # Repaired, schema_refresh() records everything that was missed.
    conn.execute("alter table resilience.schema_pending_broken rename to schema_pending")
    conn.execute("alter table resilience.schema_objects_broken rename to schema_objects")
    assert db_tracker.latest() == before
    conn.execute("select resilience.schema_refresh()")
    [version] = db_tracker.since(before)
    assert version.origin == "refresh"
    assert summary(version) == {("table_added", "public.users", None, "low")}


def test_setting_off_then_refresh_records_the_drift(tracker: Tracker) -> None:
    tracker.migrate(USERS)
    tracker.conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_tracking'"
    )
    tracker.nothing_recorded(
        "alter table users add column bio text", "alter table users drop column age"
    )
    result = tracker.conn.execute("select resilience.schema_refresh()").fetchone()
    assert result is not None
    assert result[0]["changed"] is True
    [version] = tracker.since(tracker.latest() - 1)
    assert summary(version) == {
        ("column_added", "public.users", "bio", "low"),
        ("column_dropped", "public.users", "age", "critical"),
    }
    # Nothing changed since: a second refresh records nothing.
    again = tracker.conn.execute("select resilience.schema_refresh()").fetchone()
    assert again is not None and again[0]["changed"] is False


def test_ddl_by_a_non_superuser_owner_is_tracked(db_tracker: Tracker, make_role: Any) -> None:
    owner_dsn = make_role("schema_app_owner")
    db_tracker.conn.execute("grant create on schema public to schema_app_owner")
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("create table owned (id int primary key)")
        owner.execute("alter table owned add column note text")
    history = db_tracker.conn.execute("select resilience.schema_history(2)").fetchall()
    assert [h[0]["actor_role"] for h in history] == ["schema_app_owner", "schema_app_owner"]
    counted = 1 if db_tracker.mode == "database" else None  # no stored diff without PL/Python
    assert [h[0]["change_count"] for h in history] == [counted, counted]


def test_same_schema_gives_same_hash_in_two_databases(
    server: Server, template_db: str, dsn: str
) -> None:
    """The hash covers OID-free JSON: other OIDs and attnums do not matter."""
    other = "pgr_schema_hash_twin"
    server.drop_database(other)
    other_dsn = server.create_database(other, template=template_db)
    try:
        with (
            psycopg.connect(dsn, autocommit=True) as a,
            psycopg.connect(other_dsn, autocommit=True) as b,
        ):
            # b takes a detour: other OIDs, a dropped column (other attnums).
            b.execute("create table detour (x int)")
            b.execute("drop table detour")
            b.execute("create table users (id int primary key, junk int, email text)")
            b.execute("alter table users drop column junk")
            a.execute("create table users (id int primary key, email text)")
            for conn in (a, b):
                conn.execute("create index users_email_idx on users (email)")
                conn.execute("create view emails as select email from users")
            hashes = [
                c.execute("select resilience.schema_current()->>'hash'").fetchone() for c in (a, b)
            ]
            assert hashes[0] == hashes[1]
            oids = [c.execute("select 'users'::regclass::oid").fetchone() for c in (a, b)]
            assert oids[0] != oids[1]
            # The client computes the same per-object and schema hashes.
            rows = a.execute(
                "select kind, data, hash, coalesce(table_oid, object_oid) "
                "from resilience.schema_objects"
            ).fetchall()
            assert all(diff.object_hash(kind, data) == h for kind, data, h, _ in rows)
            assert diff.schema_hash((g, h) for _, _, h, g in rows) == hashes[0][0]  # type: ignore[index]
    finally:
        server.drop_database(other)


def test_sql_api(db_tracker: Tracker) -> None:
    conn = db_tracker.conn
    conn.execute(USERS)
    current = conn.execute("select resilience.schema_current()").fetchone()
    assert current is not None
    current = current[0]
    assert set(current) == {"version", "hash", "taken_at", "tables"}
    assert [c["name"] for c in current["tables"]["public.users"]["columns"]] == [
        "id",
        "email",
        "name",
        "age",
    ]
    history = [r[0] for r in conn.execute("select resilience.schema_history()").fetchall()]
    assert [h["version"] for h in history] == sorted((h["version"] for h in history), reverse=True)
    assert history[0]["hash"] == current["hash"]
    assert [r[0]["version"] for r in conn.execute(
        "select resilience.schema_changes_since(%s)", (current["version"] - 1,)
    )] == [current["version"]]  # fmt: skip
    # The exposed wrappers (rpc()) work too.
    assert conn.execute("select public.schema_current()->>'hash'").fetchone() == (current["hash"],)


def test_api_callable_by_resilience_user(db_tracker: Tracker, make_role: Any) -> None:
    user_dsn = make_role("schema_api_user", member_of=("resilience_user",))
    db_tracker.conn.execute(USERS)
    with psycopg.connect(user_dsn, autocommit=True) as user:
        version = user.execute("select resilience.schema_current()->>'version'").fetchone()
        assert version == (str(db_tracker.latest()),)
        assert user.execute("select count(*) from resilience.schema_changes_since(0)").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute("select * from resilience.schema_objects")


def test_the_snapshot_reads_partitions_identity_generated_collation_fk_and_exclusion(
    tracker: Tracker,
) -> None:
    """Each of these properties is read from the real catalog: changing one of
    them alone is seen, with its severity."""
    tracker.migrate(
        "create table events (id bigint generated always as identity, at timestamptz not null,"
        ' name text collate "C", slug text generated always as (lower(name)) stored,'
        " primary key (id, at)) partition by range (at)",
        "create table events_2026 partition of events"
        " for values from ('2026-01-01') to ('2027-01-01')",
        "create table rooms (id int primary key, booked tstzrange,"
        " constraint no_double_booking exclude using gist (booked with &&))",
        "create table tickets (id int primary key, event_id bigint, event_at timestamptz,"
        " constraint tickets_event_fk foreign key (event_id, event_at) references events (id, at))",
    )
    steps: list[tuple[str, set[tuple[Any, ...]]]] = [
        ("alter table events alter column id drop identity",
         {("column_changed", "public.events", "id", "medium")}),
        ("alter table events alter column slug drop expression",
         {("column_changed", "public.events", "slug", "medium")}),
        ('alter table events alter column name type text collate "POSIX"',
         {("column_changed", "public.events", "name", "medium")}),
        ("alter table rooms drop constraint no_double_booking",
         {("constraint_dropped", "public.rooms", None, "high")}),
        ("alter table tickets drop constraint tickets_event_fk",
         {("constraint_dropped", "public.tickets", None, "medium")}),
        ("drop table events_2026",
         {("table_dropped", "public.events_2026", None, "critical")}),
    ]  # fmt: skip
    for statement, expected in steps:
        assert summary(tracker.migrate(statement)) >= expected, statement
