"""Oracle 3: one migration reports its net difference, rated by the severity
table (docs/schema_tracking.md, "Change records", "Severity rules",
"Identity pairing").

Whatever a migration creates, alters, renames and drops on the way (in
savepoints rolled back too), its version lists the difference between the
schema before and after it, each change once, and a migration that changes
nothing net reports no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import (
    assert_no_duplicate_records,
    changes_of,
    database_with,
    last_version,
    migrate,
    refresh_finds_nothing,
    summary,
)

pytestmark = pytest.mark.plpython

BASE = """
create schema app;
create type app.mood as enum ('sad', 'ok');
create table app."name" ("type" integer primary key, "columns" varchar(15) unique,
    "select" integer check ("select" > 0), moods app.mood[]);
create table app.other (id integer primary key, "name" integer references app."name" ("type"));
create table app.keys ("key" varchar(15) unique,
    n integer references app."name" ("type") check (n > 0));
create view app.v1 as select "type", "columns" from app."name";
create view app.v2 as select * from app.v1;
create materialized view app.mv as select "type" from app."name";
create index mv_type on app.mv ("type");
create function app.f(x integer) returns integer language sql as 'select x';
create function app.f(x text) returns integer language sql as 'select 1';
create procedure app.p(x integer) language sql as 'select 1';
create table app.guarded (id integer);
alter table app.guarded enable row level security;
create policy own on app.guarded as restrictive using (id > 0);
create policy perm on app.guarded using (id > 1);
-- (security_invoker: PostgreSQL 15+; on 14 a plain view, its case skipped)
do $$ begin
    execute 'create view app.sec' || case when current_setting('server_version_num')::int >= 150000
        then ' with (security_invoker)' else '' end || ' as select * from app.guarded';
end $$;
create function app.double(x integer) returns integer language sql immutable as 'select x * 2';
create table app.gen (a integer, "double" integer,
    b integer generated always as (app.double(a)) stored);
create table app.authors (id integer primary key, "name" text);
create table app.posts (id integer primary key, author integer references app.authors, "name" text);
create view app.feed as select a."name" as author_name, p."name" as post_name
    from app.posts as p join app.authors as a on a.id = p.author where p."name" <> a."name";
create table app.pets (id integer primary key, mood app.mood not null default 'ok');
alter table app.pets enable row level security;
create policy happy on app.pets using (mood <> 'sad'::app.mood);
create view app.calm as select id from app.pets where mood = 'ok'::app.mood;
create function app.sad_pets() returns bigint language sql
    begin atomic select count(*) from app.pets where mood = 'sad'::app.mood; end;
create table app.by_mood (m app.mood not null) partition by list (m);
create table app.by_mood_ok partition of app.by_mood for values in ('ok');
create table app.parted (id integer not null) partition by range (id);
create table app.part1 partition of app.parted for values from (0) to (10);
"""


@pytest.fixture(scope="module")
def base(server: Any, template_db: str) -> Iterator[str]:
    yield from database_with(server, template_db, BASE)


@pytest.fixture
def net(
    fresh_db: Callable[..., str], base: str
) -> Callable[..., tuple[int, list[tuple[object, ...]]]]:
    return lambda *statements: _net(fresh_db(base), *statements)


def _net(dsn: str, *statements: str) -> tuple[int, list[tuple[object, ...]]]:
    """(versions made, summary of the last one's changes) for one migration over BASE."""
    before = last_version(dsn)["version"]
    migrate(dsn, *statements)
    after = last_version(dsn)
    assert refresh_finds_nothing(dsn) == []
    if after["version"] == before:
        return 0, []
    changes = changes_of(dsn, after["version"])
    assert_no_duplicate_records(changes)
    return after["version"] - before, summary(changes)


@pytest.mark.parametrize(
    "statements",
    [
        pytest.param(
            ['alter table app."name" add column x integer',
             'alter table app."name" drop column x'], id="column-added-then-dropped"),
        pytest.param(
            ['alter table app."name" rename to "type"', 'alter table app."type" rename to "name"',
             'alter table app."name" rename column "select" to "name"',
             'alter table app."name" rename column "name" to "select"'], id="renamed-and-back"),
        pytest.param(
            ['create index i on app."name" ("select")', "drop index app.i",
             'alter table app."name" add constraint k check ("type" > 0)',
             'alter table app."name" drop constraint k'], id="index-and-constraint-undone"),
        pytest.param(
            ["savepoint s", "drop table app.other", "drop view app.v1 cascade",
             "alter type app.mood add value 'meh'", "rollback to savepoint s"],
            id="savepoint-rolled-back"),
        pytest.param(
            ["create or replace function app.f(x integer) returns integer"
             " language sql as 'select x'"], id="create-or-replace-identical"),
        pytest.param(["refresh materialized view app.mv"], id="refresh-materialized-view"),
        pytest.param(
            ["drop view app.v1 cascade",
             'create view app.v1 as select "type", "columns" from app."name"',
             "create view app.v2 as select * from app.v1"], id="views-over-views-recreated"),
        pytest.param(
            ["drop materialized view app.mv",
             'create materialized view app.mv as select "type" from app."name"',
             'create index mv_type on app.mv ("type")'], id="matview-and-index-recreated"),
        pytest.param(
            ["drop function app.f(text)",
             "create function app.f(x text) returns integer language sql as 'select 1'",
             "drop procedure app.p(integer)",
             "create procedure app.p(x integer) language sql as 'select 1'"],
            id="overloaded-function-recreated"),
        pytest.param(
            ['create table app.tmp (id integer primary key)',
             'alter table app.tmp add column "name" text',
             "create view app.tmpv as select * from app.tmp",
             "drop table app.tmp cascade"], id="created-and-dropped"),
    ],
)  # fmt: skip
def test_net_effect_nothing_net_reports_no_change(
    net: Callable[..., tuple[int, list[tuple[object, ...]]]], statements: list[str]
) -> None:
    made, changes = net(*statements)
    assert changes == []
    assert made in (0, 1)


def test_net_effect_reports_the_net_difference_once(
    net: Callable[..., tuple[int, list[tuple[object, ...]]]],
) -> None:
    """A table created, altered, renamed in one migration is one table_added
    with its final columns; a column renamed twice is one rename."""
    made, changes = net(
        "create table app.tmp (id integer primary key, a text)",
        "alter table app.tmp rename column a to b",
        "alter table app.tmp add column c integer",
        'alter table app.tmp rename to "tâble.x"',
        "savepoint s",
        "create table app.ghost (id integer)",
        'alter table app."name" drop column "select"',
        "rollback to savepoint s",
        'alter table app."name" rename column "columns" to c1',
        'alter table app."name" rename column c1 to "type.2"',
    )
    assert made == 1
    assert changes == [
        ("column_renamed", "column_renamed", "high", "app.name", "app.name", "type.2"),
        ("table_added", "table_added", "low", "app.tâble.x", "app.tâble.x", None),
    ]


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        pytest.param(
            ['alter table app.keys alter column "key" type text'],
            [("column_type_changed", "type_metadata", "low", "app.keys", "app.keys", "key")],
            id="varchar-to-text-on-unique"),
        pytest.param(
            ["alter table app.keys alter column n type bigint"],
            [("column_type_changed", "type_rewrite", "high", "app.keys", "app.keys", "n")],
            id="int-to-bigint-with-check-and-foreign-key"),
        pytest.param(
            ['alter table app."name" add constraint k2 check ("type" < 100) not valid',
             'alter table app."name" validate constraint k2'],
            [("constraint_added", "constraint_added", "medium", "app.name", "k2", None)],
            id="not-valid-then-validate-in-one-migration"),
        pytest.param(
            ['alter table app."name" add constraint k2 check ("type" < 100) not valid'],
            [("constraint_added", "constraint_added_not_valid", "low", "app.name", "k2", None)],
            id="not-valid"),
        pytest.param(
            ['alter table app."name" rename constraint "name_select_check" to "type"'],
            [("constraint_renamed", "constraint_renamed", "low", "app.name", "type", None)],
            id="constraint-renamed"),
        pytest.param(
            ['alter index app."name_columns_key" rename to "columns"'],
            [("constraint_renamed", "constraint_renamed", "low", "app.name", "columns", None)],
            id="unique-index-renamed-is-its-constraint-renamed"),
        pytest.param(
            ['alter table app."name" drop constraint "name_columns_key"'],
            [("constraint_dropped", "constraint_dropped_key", "high", "app.name",
              "name_columns_key", None)],
            id="unique-dropped"),
        pytest.param(
            ['alter table app."name" add constraint ex exclude using btree ("select" with =)'
             ' deferrable initially deferred'],
            [("constraint_added", "constraint_added", "medium", "app.name", "ex", None)],
            id="deferrable-exclusion-added"),
        pytest.param(
            ["alter function app.f(integer) security definer"],
            [("function_changed", "function_definer", "high", None, "app.f(x integer)", None)],
            id="security-definer"),
        pytest.param(
            ["alter function app.f(integer) set search_path = ''",
             "alter function app.f(text) stable"],
            [("function_changed", "function_changed", "medium", None, "app.f(x integer)", None),
             ("function_changed", "function_changed", "medium", None, "app.f(x text)", None)],
            id="search-path-and-volatility"),
        pytest.param(
            ["drop function app.f(text)",
             "create function app.f(x text) returns bigint language sql as 'select 1'"],
            [("function_changed", "function_result", "high", None, "app.f(x text)", None)],
            id="overload-recreated-with-another-result"),
        pytest.param(
            ["alter view app.v1 rename column \"columns\" to c"],
            [("view_changed", "view_columns", "high", "app.v1", "app.v1", None)],
            id="view-column-renamed"),
        pytest.param(
            ["alter type app.mood add value 'meh'"],
            [("enum_changed", "enum_value_added", "low", None, "app.mood", None)],
            id="enum-value-added-used-as-array"),
        pytest.param(
            ["alter type app.mood rename value 'ok' to 'fine'"],
            [("enum_changed", "enum_value_removed", "high", None, "app.mood", None)],
            id="enum-value-renamed-used-in-a-partition-bound"),
        pytest.param(
            ['alter function app.double(integer) rename to "dou ble"'],
            [("function_renamed", "function_renamed", "high", None, "app.dou ble(x integer)",
              None)],
            id="function-renamed-used-by-a-generated-column"),
        pytest.param(
            ["alter table app.pets rename column mood to feeling"],
            [("column_renamed", "column_renamed", "high", "app.pets", "app.pets", "feeling")],
            id="column-renamed-named-as-its-type-cast-in-policy-view-function"),
        pytest.param(
            ['alter table app.authors rename column "name" to full_name',
             'alter table app.posts rename column "name" to title'],
            [("column_renamed", "column_renamed", "high", "app.authors", "app.authors",
              "full_name"),
             ("column_renamed", "column_renamed", "high", "app.posts", "app.posts", "title")],
            id="one-column-name-renamed-two-ways-under-a-view"),
        pytest.param(
            ['alter table app.gen rename column "double" to d2'],
            [("column_renamed", "column_renamed", "high", "app.gen", "app.gen", "d2")],
            id="column-renamed-named-as-a-function-called-beside-it"),
        pytest.param(
            ["create policy everyone on app.guarded to public using (true)"],
            [("policy_changed", "policy_using_true", "critical", "app.guarded", "everyone", None)],
            id="permissive-using-true-added"),
        pytest.param(
            ["drop policy own on app.guarded"],
            [("policy_changed", "policy_restrictive_dropped", "critical", "app.guarded", "own",
              None)],
            id="restrictive-policy-dropped"),
        pytest.param(
            ["drop policy perm on app.guarded",
             "create policy perm on app.guarded using (id > 2)"],
            [("policy_changed", "policy_changed", "high", "app.guarded", "perm", None)],
            id="policy-recreated-with-another-expression"),
        pytest.param(
            ["alter table app.guarded disable row level security"],
            [("rls_changed", "rls_disabled", "critical", "app.guarded", "app.guarded", None)],
            id="rls-disabled"),
        pytest.param(
            ["alter view app.sec set (security_invoker = false)"],
            [("view_changed", "view_invoker_off", "critical", "app.sec", "app.sec", None)],
            id="security-invoker-off-over-rls",
            marks=pytest.mark.min_server_version(15, reason="security_invoker views")),
        pytest.param(
            ['alter table app."name" add column req integer not null'],
            [("column_added", "column_added_required", "high", "app.name", "app.name", "req")],
            id="not-null-column-without-default"),
        pytest.param(
            ["alter table app.parted detach partition app.part1"],
            [("table_changed", "partition_detached", "high", "app.part1", "app.part1", None)],
            id="partition-detached"),
        pytest.param(
            ["drop table app.other"],
            [("table_dropped", "table_dropped", "critical", "app.other", "app.other", None)],
            id="table-dropped"),
        pytest.param(
            ['drop table app."name" cascade'],
            [("table_dropped", "table_dropped", "critical", "app.name", "app.name", None),
             ("constraint_dropped", "constraint_dropped_guard", "medium", "app.other",
              "other_name_fkey", None),
             ("constraint_dropped", "constraint_dropped_guard", "medium", "app.keys",
              "keys_n_fkey", None),
             ("index_dropped", "index_dropped", "medium", "app.mv", "mv_type", None),
             ("view_dropped", "view_dropped", "high", "app.v1", "app.v1", None),
             ("view_dropped", "view_dropped", "high", "app.v2", "app.v2", None),
             ("view_dropped", "view_dropped", "high", "app.mv", "app.mv", None)],
            id="drop-cascade"),
    ],
)  # fmt: skip
def test_net_effect_is_rated_by_the_severity_table(
    net: Callable[..., tuple[int, list[tuple[object, ...]]]],
    statements: list[str],
    expected: list[tuple[object, ...]],
) -> None:
    made, changes = net(*statements)
    assert made == 1
    assert changes == sorted(expected)
