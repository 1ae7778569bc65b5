"""A migration that only renames reports only renames (docs, "Change
records": text that changed only because something it mentions was renamed
is not a change). Generated (hypothesis, seeded): a few renames in one
migration, to hostile names (keywords, quotes, dots, `x AS y`, names of
other objects, types and functions), over tables, columns, views and their
columns, functions, an enum type and its values, constraints, indexes and
policies that name each other (foreign keys, casts, a generated column, a
policy's subquery, views over views, a BEGIN ATOMIC body, a partition
bound)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from .conftest import changes_of, database_with, last_version, refresh_finds_nothing

pytestmark = pytest.mark.plpython

SCHEMA = """
create schema app;
create type app.mood as enum ('sad', 'ok', 'happy');
create function app.tax(x numeric) returns numeric language sql immutable as 'select x * 1.2';
create table app.users (id integer primary key,
    "name" text not null check (char_length("name") > 0),
    mood app.mood default 'ok', moods app.mood[], price numeric,
    total numeric generated always as (app.tax(price)) stored, "type" text unique);
create table app.orders (id integer primary key, user_id integer references app.users (id),
    "select" integer, note text, constraint pos check ("select" > 0));
create index orders_expr on app.orders (lower(note)) where "select" > 1;
create index users_name on app.users ("name", mood);
alter table app.orders enable row level security;
create policy mine on app.orders
    using (user_id in (select u.id from app.users as u where u.mood = 'ok'::app.mood));
create view app.v1 as select u.id, u."name", o."select"
    from app.users as u join app.orders as o on o.user_id = u.id;
create view app.v2 as select * from app.v1 where "select" > 0;
create function app.count_users() returns bigint language sql
    begin atomic select count(*) from app.users where mood <> 'sad'; end;
create function app.by_mood(m app.mood) returns setof app.users language sql
    as 'select * from app.users where mood = m';
create table app.parted (id integer not null, m app.mood) partition by list (m);
create table app.part_ok partition of app.parted for values in ('ok');
"""
NAMES = ["users2", "name", "type", "x AS y", "select", "Users", "a.b", 'q"q', "id", "ok",
         "v1", "orders", "ü", "mood", "tax", "mood2", "v2", "price"]  # fmt: skip
RENAMES = [
    "alter table app.users rename to {}",
    "alter table app.orders rename to {}",
    'alter table app.users rename column "name" to {}',
    "alter table app.users rename column mood to {}",
    "alter table app.users rename column price to {}",
    'alter table app.orders rename column "select" to {}',
    "alter table app.orders rename column note to {}",
    "alter table app.orders rename column user_id to {}",
    'alter table app.users rename column "type" to {}',
    "alter view app.v1 rename to {}",
    'alter view app.v1 rename column "name" to {}',
    'alter view app.v1 rename column "select" to {}',
    "alter function app.tax(numeric) rename to {}",
    "alter function app.count_users() rename to {}",
    "alter type app.mood rename to {}",
    "alter type app.mood rename value 'ok' to {literal}",
    "alter type app.mood rename value 'sad' to {literal}",
    "alter table app.orders rename constraint pos to {}",
    "alter index app.orders_expr rename to {}",
    "alter policy mine on app.orders rename to {}",
]
RENAME_RULES = {
    "table_renamed", "column_renamed", "view_renamed", "view_columns", "function_renamed",
    "constraint_renamed", "index_renamed", "policy_renamed", "enum_value_removed",
}  # fmt: skip


@pytest.fixture(scope="module")
def app_db(server: Any, template_db: str) -> Iterator[str]:
    yield from database_with(server, template_db, SCHEMA)


@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(st.integers(0, len(RENAMES) - 1), st.integers(0, len(NAMES) - 1)),
        min_size=1,
        max_size=5,
    )
)
def test_rename_only_migration_reports_only_renames(
    fresh_db: Callable[..., str], app_db: str, renames: list[tuple[int, int]]
) -> None:
    dsn = fresh_db(app_db)
    before = last_version(dsn)["version"]
    with psycopg.connect(dsn) as conn:
        for which, name in renames:
            statement = sql.SQL(RENAMES[which]).format(
                sql.Identifier(NAMES[name]), literal=sql.Literal(NAMES[name])
            )
            conn.execute("savepoint r")
            try:
                conn.execute(statement)
            except psycopg.Error:  # renamed already, or the name is taken
                conn.execute("rollback to savepoint r")
            else:
                conn.execute("release savepoint r")
        conn.commit()
    version = last_version(dsn)["version"]
    if version != before:
        assert [
            (c["type"], c.get("rule"), c["object"], c["old_value"], c["new_value"])
            for c in changes_of(dsn, version)
            if c.get("rule") not in RENAME_RULES
        ] == []
    assert refresh_finds_nothing(dsn) == []
