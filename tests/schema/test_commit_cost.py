"""What keeps the first DDL of a new session cheap (issue 12, item 5), tried
to break: the diff module's compiled code cached in the database, a module
that imports nothing heavy at load, a commit path with fewer statements.
None of it may cost a version, a hash or a rating (timings: bench/)."""

from __future__ import annotations

import marshal
from typing import Any

import psycopg
import pytest

from .conftest import Tracker, summary

DIFF_AT_COMMIT = "update resilience.settings set value = %s where name = 'schema_diff_at_commit'"
CACHE = "select bytecode_key, sha256 from resilience.plpython_modules where name = 'schema_diff'"
SET_CACHE = (
    "update resilience.plpython_modules set bytecode = %s, bytecode_key = %s"
    " where name = 'schema_diff'"
)


def one(conn: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]  # literal test SQL
    assert row is not None
    return tuple(row)


def fresh_session_migrates(dsn: str, statement: str) -> list[dict[str, Any]]:
    """Run ``statement`` in a new session with the diff at commit; the
    changes its commit rated (the diff module loads in that session)."""
    with psycopg.connect(dsn, autocommit=True) as fresh:
        fresh.execute(statement)  # type: ignore[arg-type]  # literal test SQL
        row = one(
            fresh, "select changes from resilience.schema_versions order by version desc limit 1"
        )
    assert row[0] is not None, "the commit did not rate the version"
    return list(row[0])


@pytest.fixture
def at_commit(db_tracker: Tracker) -> Tracker:
    if db_tracker.mode != "database":
        pytest.skip("needs PL/Python")
    db_tracker.conn.execute(DIFF_AT_COMMIT, ("on",))
    db_tracker.migrate("create table t (id int)")  # compiles and caches the module
    return db_tracker


@pytest.mark.plpython
def test_cached_code_of_another_interpreter_is_compiled_again(at_commit: Tracker, dsn: str) -> None:
    key, sha = one(at_commit.conn, CACHE)
    assert key.startswith(f"{sha}:")
    # Same source, another bytecode magic number (another Python build):
    # its code must not be run; this interpreter compiles and stores its own.
    other_magic = ":".join([*key.split(":")[:2], "00000d0a"])
    assert other_magic != key
    at_commit.conn.execute(
        SET_CACHE, (marshal.dumps(compile("raise SystemError", "x", "exec")), other_magic)
    )
    changes = fresh_session_migrates(dsn, "alter table t add column note text")
    assert summary(changes) == {("column_added", "public.t", "note", "low")}
    assert one(at_commit.conn, CACHE)[0] == key


@pytest.mark.plpython
@pytest.mark.parametrize(
    "cached",
    [b"junk", b"", marshal.dumps(42), marshal.dumps(compile("x = 1", "x", "exec"))[:-3]],
    ids=["junk", "empty", "not-code", "truncated"],
)
def test_corrupted_cached_code_is_compiled_again_and_blocks_nothing(
    at_commit: Tracker, dsn: str, cached: bytes
) -> None:
    key, _ = one(at_commit.conn, CACHE)
    at_commit.conn.execute(SET_CACHE, (cached, key))  # the right key, unusable code
    changes = fresh_session_migrates(dsn, "alter table t add column note text")
    assert summary(changes) == {("column_added", "public.t", "note", "low")}
    # Repaired: the next session loads the stored code again.
    stored = one(
        at_commit.conn,
        "select bytecode from resilience.plpython_modules where name = 'schema_diff'",
    )
    assert hasattr(marshal.loads(stored[0]), "co_code")
    assert one(at_commit.conn, CACHE)[0] == key


@pytest.mark.plpython
def test_the_commit_diff_imports_neither_re_nor_json(at_commit: Tracker, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as fresh:
        fresh.execute("create table u (id int primary key, note text not null default 'x')")
        # Same session: what the diff at commit left imported.
        fresh.execute(
            "do language plpython3u $$\n"
            "import sys\n"
            "heavy = sorted({'re', 'json', 'enum', 'typing', 'collections'} & set(sys.modules))\n"
            "if heavy:\n"
            "    plpy.error('imported at commit: ' + ', '.join(heavy))\n"
            "$$"
        )
        row = one(
            fresh, "select changes from resilience.schema_versions order by version desc limit 1"
        )
    assert {c["type"] for c in row[0]} == {"table_added"}


@pytest.mark.plpython
def test_rules_that_match_text_still_apply_in_a_new_session(at_commit: Tracker, dsn: str) -> None:
    # These rules import re at first use (type modifiers, volatile defaults,
    # key columns): in a session that has not imported it yet.
    at_commit.migrate("create table k (id int, code varchar(10), email text)")
    assert summary(
        fresh_session_migrates(dsn, "alter table k alter column code type varchar(20)")
    ) == {("column_type_changed", "public.k", "code", "low")}
    assert summary(
        fresh_session_migrates(dsn, "alter table k add column r float8 default random()")
    ) == {("column_added", "public.k", "r", "high")}
    with psycopg.connect(dsn, autocommit=True) as fresh, fresh.transaction():
        fresh.execute("create unique index k_email_idx on k (email)")
        fresh.execute("alter table k add constraint k_email_key unique using index k_email_idx")
    row = one(
        at_commit.conn,
        "select changes from resilience.schema_versions order by version desc limit 1",
    )
    assert [c["type"] for c in row[0]] == ["constraint_added"], row[0]


# --- the commit path (PL/pgSQL) -------------------------------------------

HOSTILE_MIGRATION = (
    'create schema "we;ird.sch""ema"',
    'create table "we;ird.sch""ema"."par,ent" ("i,d" int primary key)',
    # No index, no CHECK, no foreign key yet: pg_class says so, and the
    # commit skips those queries for it.
    'create table "we;ird.sch""ema"."t.a;b" ("x" int, "y,z" text collate "C")',
    'create table "we;ird.sch""ema".parts (k int, v int) partition by range (k)',
    'create table "we;ird.sch""ema"."p;1" partition of "we;ird.sch""ema".parts'
    " for values from (0) to (10)",
    'create type "we;ird.sch""ema"."m,o\'od" as enum (\'a\', \'b\')',
    'create view "we;ird.sch""ema"."v;w" as select "x" from "we;ird.sch""ema"."t.a;b"',
    'create function "we;ird.sch""ema"."f,n"(int) returns int language sql as $$ select $1 $$',
)

# Each ALTER gives a table with no such object a first one (or takes its last).
FIRSTS = (
    (
        'alter table "we;ird.sch""ema"."t.a;b" add constraint "f,k" foreign key ("x")'
        ' references "we;ird.sch""ema"."par,ent"',
        "constraint_added",
    ),
    (
        'alter table "we;ird.sch""ema"."t.a;b" add constraint "c;k" check ("x" > 0)',
        "constraint_added",
    ),
    ('create index "i;x" on "we;ird.sch""ema"."t.a;b" ("y,z")', "index_added"),
    (
        'alter table "we;ird.sch""ema".parts add constraint "f;p" foreign key (k)'
        ' references "we;ird.sch""ema"."par,ent"',
        "constraint_added",
    ),
    ('alter table "we;ird.sch""ema"."p;1" add constraint "c;p" check (v > 0)', "constraint_added"),
    ('alter table "we;ird.sch""ema".parts add primary key (k)', "primary_key_changed"),
    ('alter table "we;ird.sch""ema"."t.a;b" drop constraint "c;k"', "constraint_dropped"),
    ('alter table "we;ird.sch""ema"."t.a;b" drop constraint "f,k"', "constraint_dropped"),
    ('drop index "we;ird.sch""ema"."i;x"', "index_dropped"),
)


def snapshot_misses(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Constraints and indexes of tracked tables the snapshot lacks."""
    return conn.execute(
        "select k.kind, k.oid from ("
        "  select 'constraint' as kind, c.oid"
        "  from pg_constraint c join pg_class r on r.oid = c.conrelid"
        "  join pg_namespace n on n.oid = r.relnamespace"
        "  where n.nspname = 'we;ird.sch\"ema' and c.contype in ('p', 'u', 'c', 'f', 'x')"
        "  union all"
        "  select 'index', i.indexrelid from pg_index i join pg_class r on r.oid = i.indrelid"
        "  join pg_namespace n on n.oid = r.relnamespace"
        "  where n.nspname = 'we;ird.sch\"ema'"
        "    and not exists (select from pg_constraint c where c.conindid = i.indexrelid"
        "                    and c.contype in ('p', 'u', 'x'))"
        ") as k where not exists ("
        "  select from resilience.schema_objects o where o.kind = k.kind and o.object_oid = k.oid)"
    ).fetchall()


def test_one_version_per_transaction_with_the_hash_a_full_reread_gives(tracker: Tracker) -> None:
    changes = tracker.migrate(*HOSTILE_MIGRATION)
    assert {c["type"] for c in changes} >= {
        "table_added",
        "view_added",
        "enum_added",
        "function_added",
    }
    assert {c["table"] for c in changes if c["type"] == "table_added"} == {
        'we;ird.sch"ema.par,ent',
        'we;ird.sch"ema.t.a;b',
        'we;ird.sch"ema.parts',
        'we;ird.sch"ema.p;1',
    }
    for statement, expected in FIRSTS:
        change = tracker.migrate(statement)
        assert expected in {c["type"] for c in change}, (statement, change)
        assert snapshot_misses(tracker.conn) == [], statement
        # What the commits recorded is what a full re-read of the catalog finds.
        before = tracker.hash()
        refreshed = one(tracker.conn, "select resilience.schema_refresh()")[0]
        assert refreshed["changed"] is False, (statement, refreshed)
        assert tracker.hash() == before


def test_a_transaction_of_many_statements_is_one_version(tracker: Tracker) -> None:
    statements = [*HOSTILE_MIGRATION, *(s for s, _ in FIRSTS[:6])]
    statements += [
        f'alter table "we;ird.sch""ema"."t.a;b" add column "c;{i}" int' for i in range(50)
    ]
    tracker.migrate(*statements)
    refreshed = one(tracker.conn, "select resilience.schema_refresh()")[0]
    assert refreshed["changed"] is False
    assert snapshot_misses(tracker.conn) == []


def test_the_first_fold_of_a_session_changes_no_setting_of_the_caller(
    db_tracker: Tracker, dsn: str
) -> None:
    # A session's first fold plans for its own values (plan_cache_mode), the
    # later ones reuse generic plans: the caller's settings stay as they were.
    with psycopg.connect(dsn, autocommit=True) as fresh:
        fresh.execute("set plan_cache_mode = force_generic_plan")
        with fresh.transaction():
            fresh.execute("create table first (id int)")
            fresh.execute("select resilience.schema_refresh()")  # a fold inside the transaction
            assert one(fresh, "show plan_cache_mode") == ("force_generic_plan",)
        fresh.execute("create table second (id int)")
        fresh.execute("select resilience.schema_preview()")
        assert one(fresh, "show plan_cache_mode") == ("force_generic_plan",)
    latest = db_tracker.since(db_tracker.latest() - 2)
    assert [sorted(c["table"] for c in v) for v in latest[-2:]] == [
        ["public.first"],
        ["public.second"],
    ]
