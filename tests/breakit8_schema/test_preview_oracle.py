"""Hypothesis, seeded and bounded: random migrations (statements from a pool
over a hostile schema: reserved words, quotes, unicode; failed statements
rolled back to a savepoint) are previewed, then committed. The oracle: the
preview equals the version the commit records, and a full re-read
(schema_refresh()) afterwards finds nothing left to record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgresilience.schema._core import ChangeList

from .conftest import fresh_database, set_diff_mode

# A schema named with unicode, a space and a double quote: "Ünïcode ""sch""".
S = '"Ünïcode ' + '""sch""' + '"'
BASE = f"""
create schema {S};
create table {S}.select (
    "order" int primary key, "from" text not null default 'x', "Δ" numeric(10, 2),
    "tx_id" text, "group" varchar(20) unique
);
create table {S}.child (id int primary key, parent int references {S}.select ("order"), note text);
create index "select idx" on {S}.select ("from");
create view {S}.v as select "order", "from" from {S}.select;
create type {S}.mood as enum ('ok', 'meh');
create function {S}.f(a int) returns int language sql as 'select a + 1';
"""
POOL = [
    f'alter table {S}.select add column "user" text',
    f'alter table {S}.select drop column "Δ"',
    f'alter table {S}.select rename column "from" to "to"',
    f'alter table {S}.select alter column "group" type text',
    f'alter table {S}.select alter column "tx_id" set not null',
    f'alter table {S}.select alter column "from" drop default',
    f'alter table {S}.select add constraint pos check ("order" > 0)',
    f'alter table {S}.select drop constraint "select_group_key"',
    f'alter table {S}.select rename to "insert"',
    f"alter table {S}.child drop constraint child_parent_fkey",
    f"alter table {S}.child enable row level security",
    f"create policy p on {S}.child using (true)",
    f'drop index {S}."select idx"',
    f'alter index {S}."select idx" rename to "from idx"',
    f"drop view {S}.v",
    f'create or replace view {S}.v as select "order", "from", 1 as one from {S}.select',
    f"alter type {S}.mood add value 'great'",
    f"alter type {S}.mood rename value 'meh' to 'bof'",
    f"create or replace function {S}.f(a int) returns int language sql as 'select a + 2'",
    f"alter function {S}.f(int) security definer",
    f"drop table {S}.child",
    f'create table {S}."table" ("column" int)',
]


@pytest.fixture(scope="module", params=["at_commit", "first_read"])
def oracle_dsn(request: pytest.FixtureRequest, server: Any, template_db: str) -> Iterator[str]:
    for dsn in fresh_database(server, template_db):
        set_diff_mode(dsn, request.param)
        yield dsn


def _comparable(changes: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(c, sort_keys=True) for c in changes)


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.sampled_from(POOL), min_size=1, max_size=5))
def test_the_preview_is_what_the_commit_records(oracle_dsn: str, statements: list[str]) -> None:
    with psycopg.connect(oracle_dsn, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {S} cascade")
        conn.execute(BASE)
        before = conn.execute("select resilience.schema_current() ->> 'version'").fetchone()
        assert before is not None
        with conn.transaction():
            for statement in statements:
                try:
                    with conn.transaction():  # a savepoint: a failed statement is forgotten
                        conn.execute(statement)
                except psycopg.errors.DatabaseError:
                    pass
            row = conn.execute("select resilience.schema_preview()").fetchone()
            assert row is not None
            preview = ChangeList.from_row(row[0])
        rows = conn.execute(
            "select resilience.schema_changes_since(%s)", (int(before[0]),)
        ).fetchall()
        committed = [ChangeList.from_row(r[0]) for r in rows]
        if not preview:
            assert committed == []
        else:
            assert len(committed) == 1
            assert (committed[0].version, committed[0].hash) == (preview.version, preview.hash)
            assert _comparable(list(committed[0])) == _comparable(list(preview))
            assert all(c["severity"] in ("low", "medium", "high", "critical") for c in preview)
        refresh = conn.execute("select resilience.schema_refresh()").fetchone()
        assert refresh is not None and refresh[0]["changed"] is False, refresh
