"""Every row of the severity table in docs/schema_tracking.md, produced by a
real migration and checked literally (change type, severity, rule id), in
both diff modes: at commit (schema_diff_at_commit on) and at the first read
(off). Each migration is also previewed before its commit: the preview must
announce exactly what the commit then records (the oracle of
`pgresilience plan`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from pgresilience.schema import diff
from pgresilience.schema._core import ChangeList

from .conftest import fresh_database, set_diff_mode


@dataclass(frozen=True)
class Case:
    rule: str  # the rule id the change must carry (schema_diff.RULES)
    type: str  # the doc table's "change type"
    severity: str  # the doc table's "severity"
    setup: str
    migration: str
    # CREATE INDEX CONCURRENTLY cannot run in a transaction: statements run
    # one by one, autocommit, and nothing is previewed.
    autocommit: bool = False
    min_server: int = 0


T = "create table t (c int);"
CASES = [
    Case("table_added", "table_added", "low", "", "create table t (id int)"),
    Case("table_dropped", "table_dropped", "critical", T, "drop table t"),
    Case("table_renamed", "table_renamed", "high", T, "alter table t rename to t2"),
    Case("table_persistence", "table_changed", "high", T, "alter table t set unlogged"),
    Case(
        "partition_detached", "table_changed", "high",
        "create table p (c int) partition by list (c);"
        " create table p1 partition of p for values in (1);",
        "alter table p detach partition p1",
    ),
    Case(
        "partition_attached", "table_changed", "medium",
        "create table p (c int) partition by list (c); create table p1 (c int);",
        "alter table p attach partition p1 for values in (1)",
    ),
    Case("column_added", "column_added", "low", T, "alter table t add column d int default 0"),
    Case(
        "column_added_required", "column_added", "high", T,
        "alter table t add column d int not null",
    ),
    Case(
        "column_added_rewrite", "column_added", "high", T,
        "alter table t add column d timestamptz default clock_timestamp()",
    ),
    Case("column_dropped", "column_dropped", "critical", T, "alter table t drop column c"),
    Case("column_renamed", "column_renamed", "high", T, "alter table t rename column c to d"),
    Case(
        "type_rewrite", "column_type_changed", "high", T,
        "alter table t alter column c type bigint",
    ),
    Case(
        "type_narrowing", "column_type_changed", "high", "create table t (c varchar(50));",
        "alter table t alter column c type varchar(10)",
    ),
    Case(
        "type_metadata", "column_type_changed", "low", "create table t (c varchar(10));",
        "alter table t alter column c type varchar(50)",
    ),
    Case(
        "set_not_null", "nullability_changed", "high", T,
        "alter table t alter column c set not null",
    ),
    Case(
        "drop_not_null", "nullability_changed", "medium", "create table t (c int not null);",
        "alter table t alter column c drop not null",
    ),
    Case(
        "default_dropped_not_null", "default_changed", "high",
        "create table t (c int not null default 0);", "alter table t alter column c drop default",
    ),
    Case(
        "default_changed", "default_changed", "low", "create table t (c int default 0);",
        "alter table t alter column c set default 1",
    ),
    Case(
        "column_property", "column_changed", "medium", "create table t (c int not null);",
        "alter table t alter column c add generated always as identity",
    ),
    Case(
        "constraint_added", "constraint_added", "medium", T,
        "alter table t add constraint c_pos check (c > 0)",
    ),
    Case(
        "constraint_added_not_valid", "constraint_added", "low", T,
        "alter table t add constraint c_pos check (c > 0) not valid",
    ),
    Case(
        "constraint_using_index", "constraint_added", "low",
        T + " create unique index t_c_idx on t (c);",
        "alter table t add constraint t_c_key unique using index t_c_idx",
    ),
    Case(
        "constraint_dropped_key", "constraint_dropped", "high",
        "create table t (c int constraint t_c_key unique);",
        "alter table t drop constraint t_c_key",
    ),
    Case(
        "constraint_dropped_guard", "constraint_dropped", "medium",
        "create table t (c int constraint c_pos check (c > 0));",
        "alter table t drop constraint c_pos",
    ),
    Case(
        "constraint_renamed", "constraint_renamed", "low",
        "create table t (c int constraint c_pos check (c > 0));",
        "alter table t rename constraint c_pos to c_positive",
    ),
    Case(
        "constraint_redefined", "constraint_changed", "medium",
        "create table t (c int constraint c_pos check (c > 0));",
        "alter table t drop constraint c_pos, add constraint c_pos check (c > 1)",
    ),
    Case(
        "constraint_changed", "constraint_changed", "low",
        T + " alter table t add constraint c_pos check (c > 0) not valid;",
        "alter table t validate constraint c_pos",
    ),
    Case(
        "primary_key_changed", "primary_key_changed", "high", "create table t (c int not null);",
        "alter table t add primary key (c)",
    ),
    Case(
        "primary_key_using_index", "primary_key_changed", "medium",
        "create table t (c int not null); create unique index t_c_idx on t (c);",
        "alter table t add constraint t_pkey primary key using index t_c_idx",
    ),
    # An index on a new table is part of its table_added record; the row
    # "on a new table" is what an index on a new materialized view gets.
    Case(
        "index_added_new_table", "index_added", "low", T,
        "create materialized view mv as select c from t; create index on mv (c)",
    ),
    Case("index_added", "index_added", "medium", T, "create index t_c_idx on t (c)"),
    Case(
        "index_added_concurrently", "index_added", "low", T,
        "create index concurrently t_c_idx on t (c)", autocommit=True,
    ),
    Case(
        "index_dropped_unique", "index_dropped", "high",
        T + " create unique index t_c_idx on t (c);", "drop index t_c_idx",
    ),
    Case(
        "index_dropped", "index_dropped", "medium", T + " create index t_c_idx on t (c);",
        "drop index t_c_idx",
    ),
    Case(
        "index_renamed", "index_renamed", "low", T + " create index t_c_idx on t (c);",
        "alter index t_c_idx rename to t_c_index",
    ),
    Case(
        "index_redefined", "index_changed", "medium", T + " create index t_c_idx on t (c);",
        "drop index t_c_idx; create index t_c_idx on t (c desc)",
    ),
    Case(
        # An index ON ONLY a partitioned table is invalid until every
        # partition has one attached: attaching the last makes it valid.
        "index_validated", "index_changed", "low",
        "create table p (c int) partition by list (c);"
        " create table p1 partition of p for values in (1);"
        " create index p_c_idx on only p (c);",
        "create index p1_c_idx on p1 (c); alter index p_c_idx attach partition p1_c_idx",
    ),
    Case(
        "rls_disabled", "rls_changed", "critical",
        T + " alter table t enable row level security;",
        "alter table t disable row level security",
    ),
    Case("rls_enabled", "rls_changed", "high", T, "alter table t enable row level security"),
    Case("rls_forced", "rls_changed", "medium", T, "alter table t force row level security"),
    Case(
        "policy_restrictive_dropped", "policy_changed", "critical",
        T + " create policy r on t as restrictive using (c > 0);", "drop policy r on t",
    ),
    Case("policy_using_true", "policy_changed", "critical", T, "create policy p on t using (true)"),
    Case(
        "policy_changed", "policy_changed", "high", T + " create policy p on t using (c > 0);",
        "alter policy p on t using (c > 1)",
    ),
    Case("policy_added", "policy_changed", "medium", T, "create policy p on t using (c > 0)"),
    Case(
        "policy_renamed", "policy_changed", "low", T + " create policy p on t using (c > 0);",
        "alter policy p on t rename to q",
    ),
    Case("view_added", "view_added", "low", T, "create view v as select c from t"),
    Case(
        "view_dropped", "view_dropped", "high", T + " create view v as select c from t;",
        "drop view v",
    ),
    Case(
        "view_renamed", "view_renamed", "high", T + " create view v as select c from t;",
        "alter view v rename to w",
    ),
    Case(
        "view_columns", "view_changed", "high", T + " create view v as select c from t;",
        "drop view v; create view v as select c as d from t",
    ),
    Case(
        "view_invoker_off", "view_changed", "critical",
        T + " alter table t enable row level security;"
        " create view v with (security_invoker = true) as select c from t;",
        "alter view v set (security_invoker = false)",
        min_server=15,
    ),
    Case(
        "view_options", "view_changed", "medium", T + " create view v as select c from t;",
        "alter view v set (security_barrier = true)",
    ),
    Case(
        "view_changed", "view_changed", "medium", T + " create view v as select c from t;",
        "create or replace view v as select c from t where c > 0",
    ),
    Case(
        "function_added", "function_added", "low", "",
        "create function f() returns int language sql as 'select 1'",
    ),
    Case(
        "function_dropped", "function_dropped", "high",
        "create function f() returns int language sql as 'select 1';", "drop function f()",
    ),
    Case(
        "function_renamed", "function_renamed", "high",
        "create function f() returns int language sql as 'select 1';",
        "alter function f() rename to g",
    ),
    Case(
        "function_definer", "function_changed", "high",
        "create function f() returns int language sql as 'select 1';",
        "alter function f() security definer",
    ),
    Case(
        "function_result", "function_changed", "high",
        "create function f() returns int language sql as 'select 1';",
        "drop function f(); create function f() returns bigint language sql as 'select 1::bigint'",
    ),
    Case(
        "function_changed", "function_changed", "medium",
        "create function f() returns int language sql as 'select 1';",
        "create or replace function f() returns int language sql as 'select 2'",
    ),
    Case("enum_added", "enum_added", "low", "", "create type e as enum ('a')"),
    Case("enum_dropped", "enum_dropped", "medium", "create type e as enum ('a');", "drop type e"),
    Case(
        "enum_value_added", "enum_changed", "low", "create type e as enum ('a');",
        "alter type e add value 'b'",
    ),
    Case(
        "enum_value_removed", "enum_changed", "high", "create type e as enum ('a');",
        "alter type e rename value 'a' to 'z'",
    ),
]  # fmt: skip

# The doc's "value removed or renamed, type renamed": the type's rename too.
RENAMED_ENUM = Case(
    "enum_value_removed", "enum_changed", "high", "create type e as enum ('a');",
    "alter type e rename to e2",
)  # fmt: skip


@pytest.fixture(scope="module", params=["at_commit", "first_read"])
def mode_dsn(request: pytest.FixtureRequest, server: Any, template_db: str) -> Iterator[str]:
    """One database per diff mode for the whole module (each case works in a
    schema of its own)."""
    for dsn in fresh_database(server, template_db):
        set_diff_mode(dsn, request.param)
        yield dsn


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select (resilience.schema_current() ->> 'version')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _comparable(changes: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(c, sort_keys=True) for c in changes)


def migrate(dsn: str, name: str, case: Case) -> tuple[ChangeList | None, list[dict[str, Any]]]:
    """Set the case up in schema `name`, run its migration; returns (the
    preview taken just before the commit, the changes recorded since)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'create schema "{name}"')
        conn.execute(f'set search_path = "{name}"')
        if case.setup:
            with conn.transaction():
                conn.execute(case.setup)
        before = _version(conn)
        preview = None
        if case.autocommit:
            for statement in case.migration.split(";"):
                conn.execute(statement)
        else:
            with conn.transaction():
                conn.execute(case.migration)
                row = conn.execute("select resilience.schema_preview()").fetchone()
                assert row is not None
                preview = ChangeList.from_row(row[0])
        rows = conn.execute("select resilience.schema_changes_since(%s)", (before,)).fetchall()
    committed = [c for r in rows for c in ChangeList.from_row(r[0])]
    return preview, committed


def check(dsn: str, name: str, case: Case) -> None:
    preview, committed = migrate(dsn, name, case)
    found = [(c["type"], c["severity"]) for c in committed if c.get("rule") == case.rule]
    assert found, f"no change rated by rule {case.rule}: {committed}"
    assert (case.type, case.severity) in found, committed
    if preview is not None:
        assert preview.max_severity == diff.max_severity(committed)
        assert _comparable(list(preview)) == _comparable(committed)


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_each_rule_of_the_severity_table(
    mode_dsn: str, case: Case, server_features: Any, request: pytest.FixtureRequest
) -> None:
    if server_features.major < case.min_server:
        pytest.skip(f"needs PostgreSQL {case.min_server}+ (security_invoker)")
    check(mode_dsn, f"r_{request.node.callspec.id.replace('-', '_')}", case)


def test_a_renamed_enum_type_is_rated_high(mode_dsn: str) -> None:
    check(mode_dsn, "r_enum_type_renamed", RENAMED_ENUM)


def test_an_invalid_index_left_by_a_failed_concurrently_is_high(mode_dsn: str) -> None:
    """The failed CREATE INDEX CONCURRENTLY fires no event trigger: the next
    schema_refresh() (or DDL on the table) reports it."""
    with psycopg.connect(mode_dsn, autocommit=True) as conn:
        conn.execute("create schema r_index_invalid")
        conn.execute("set search_path = r_index_invalid")
        conn.execute("create table t (c int); insert into t values (1), (1)")
        before = _version(conn)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("create unique index concurrently t_c_idx on t (c)")
        conn.execute("select resilience.schema_refresh()")
        rows = conn.execute("select resilience.schema_changes_since(%s)", (before,)).fetchall()
    committed = [c for r in rows for c in ChangeList.from_row(r[0])]
    assert [(c["rule"], c["type"], c["severity"]) for c in committed] == [
        ("index_invalid", "index_invalid", "high")
    ]


def test_a_table_whose_kind_changed_under_its_name_is_a_table_property_change(
    mode_dsn: str,
) -> None:
    """A table's kind cannot change in place (a table is never paired by name
    within one migration: DROP + CREATE stays a drop plus an add); only a
    restore re-keys by name. Simulated: the table is re-created partitioned
    while tracking is off, then the catalog identity changes, as after a
    restore, and schema_refresh() pairs by name."""
    with psycopg.connect(mode_dsn, autocommit=True) as conn:
        conn.execute("create schema r_table_property")
        conn.execute("set search_path = r_table_property")
        conn.execute("create table t (c int)")
        before = _version(conn)
        conn.execute("update resilience.settings set value = 'off' where name = 'schema_tracking'")
        conn.execute("drop table t; create table t (c int) partition by list (c)")
        conn.execute("update resilience.settings set value = 'on' where name = 'schema_tracking'")
        conn.execute(
            "update resilience.schema_catalog set system_identifier = system_identifier + 1"
        )
        conn.execute("select resilience.schema_refresh()")
        rows = conn.execute("select resilience.schema_changes_since(%s)", (before,)).fetchall()
    committed = [c for r in rows for c in ChangeList.from_row(r[0])]
    rated = {(c["rule"], c["type"], c["severity"]) for c in committed}
    assert ("table_property", "table_changed", "medium") in rated, committed


def test_every_rule_of_the_table_has_a_migration_here() -> None:
    covered = {c.rule for c in CASES} | {"index_invalid", "table_property"}
    assert covered == set(diff.module().RULES)
