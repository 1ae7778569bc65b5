"""Identity pairing (DESIGN.md section 2, v2): objects PostgreSQL re-creates
under a new OID are one change with the real difference, rated by that
difference, or no change at all. Every case runs in both diff modes."""

from __future__ import annotations

from typing import Any

from .conftest import summary

Tracker = Any  # tests/schema/conftest.py: Tracker


def test_varchar_to_text_on_a_unique_column_is_one_metadata_change(tracker: Tracker) -> None:
    tracker.migrate("create table t (id int primary key, code varchar(15) unique)")
    changes = tracker.migrate("alter table t alter column code type text")
    # The unique constraint and its index were rebuilt under new OIDs: not a lost key.
    assert summary(changes) == {("column_type_changed", "public.t", "code", "low")}


def test_int_to_bigint_with_a_check_an_index_and_a_foreign_key(tracker: Tracker) -> None:
    tracker.migrate(
        "create table parent (id int primary key)",
        "create table t (id int primary key, n int check (n > 0), p int references parent (id))",
        "create index t_n_idx on t (n)",
    )
    changes = tracker.migrate(
        "alter table t alter column n type bigint", "alter table t alter column p type bigint"
    )
    assert summary(changes) == {
        ("column_type_changed", "public.t", "n", "high"),
        ("column_type_changed", "public.t", "p", "high"),
    }
    # The rebuilt primary key of a retyped key column is no change either.
    changes = tracker.migrate("alter table parent alter column id type bigint")
    assert summary(changes) == {("column_type_changed", "public.parent", "id", "high")}


def test_add_unique_constraint_using_index_is_the_safe_pattern(tracker: Tracker) -> None:
    tracker.migrate("create table t (id int, email text)")
    built = tracker.migrate("create unique index t_email_idx on t (email)")
    assert summary(built) == {("index_added", "public.t", None, "medium")}
    changes = tracker.migrate(
        "alter table t add constraint t_email_key unique using index t_email_idx"
    )
    assert summary(changes) == {("constraint_added", "public.t", None, "low")}
    [change] = changes
    assert change["object"] == "t_email_key"
    assert "t_email_idx" in change["reason"]
    tracker.migrate("create unique index t_id_idx on t (id)", "alter table t alter id set not null")
    pk = tracker.migrate("alter table t add constraint t_pkey primary key using index t_id_idx")
    assert summary(pk) == {("primary_key_changed", "public.t", None, "medium")}


def test_function_dropped_and_created_again_with_a_renamed_result_column(tracker: Tracker) -> None:
    create = "create function f(a int) returns table ({} int) language sql as 'select a'"
    tracker.migrate(create.format("x"))
    changes = tracker.migrate("drop function f(int)", create.format("y"))
    assert summary(changes) == {("function_changed", None, None, "high")}
    [change] = changes
    assert change["old_value"] == {"result": "TABLE(x integer)"}
    assert change["new_value"] == {"result": "TABLE(y integer)"}
    # The same function created again: nothing differs, nothing is reported.
    assert list(tracker.migrate("drop function f(int)", create.format("y"))) == []


def test_view_dropped_and_created_again(tracker: Tracker) -> None:
    tracker.migrate("create table t (id int, name text)", "create view v as select id, name from t")
    renamed_column = tracker.migrate(
        "drop view v", "create view v as select id, name as full_name from t"
    )
    assert summary(renamed_column) == {("view_changed", "public.v", None, "high")}
    same = tracker.migrate("drop view v", "create view v as select id, name as full_name from t")
    assert list(same) == []
    other_filter = tracker.migrate(
        "drop view v", "create view v as select id, name as full_name from t where id > 0"
    )
    assert summary(other_filter) == {("view_changed", "public.v", None, "medium")}


def test_policy_dropped_and_created_again(tracker: Tracker) -> None:
    tracker.migrate(
        "create table t (id int, owner text)",
        "alter table t enable row level security",
        "create policy own on t using (owner = current_user)",
    )
    same = tracker.migrate(
        "drop policy own on t", "create policy own on t using (owner = current_user)"
    )
    assert list(same) == []
    changed = tracker.migrate(
        "drop policy own on t", "create policy own on t using (owner = session_user)"
    )
    assert summary(changed) == {("policy_changed", "public.t", None, "high")}
    # Made USING (true): every row exposed, as adding such a policy would.
    widened = tracker.migrate("drop policy own on t", "create policy own on t using (true)")
    assert summary(widened) == {("policy_changed", "public.t", None, "critical")}


def test_constraint_dropped_and_added_again_with_another_definition(tracker: Tracker) -> None:
    tracker.migrate("create table t (n int, constraint n_ok check (n > 0))")
    changes = tracker.migrate(
        "alter table t drop constraint n_ok", "alter table t add constraint n_ok check (n >= 0)"
    )
    assert summary(changes) == {("constraint_changed", "public.t", None, "medium")}
    same = tracker.migrate(
        "alter table t drop constraint n_ok", "alter table t add constraint n_ok check (n >= 0)"
    )
    assert list(same) == []


def test_a_dropped_and_recreated_table_is_still_a_drop(tracker: Tracker) -> None:
    """Tables are never paired by name: dropping one loses its rows."""
    tracker.migrate("create table t (id int)")
    changes = tracker.migrate("drop table t", "create table t (id int)")
    assert summary(changes) == {
        ("table_dropped", "public.t", None, "critical"),
        ("table_added", "public.t", None, "low"),
    }


def test_after_pairing_a_full_re_read_finds_nothing(tracker: Tracker) -> None:
    tracker.migrate("create table t (id int primary key, code varchar(15) unique)")
    tracker.migrate(
        "alter table t alter column code type text", "alter table t alter id type bigint"
    )
    refreshed = tracker.conn.execute("select resilience.schema_refresh()").fetchone()
    assert refreshed is not None and refreshed[0]["changed"] is False


def test_hostile_names_pair_like_any_other(tracker: Tracker) -> None:
    tracker.migrate(
        'create schema "s.1"',
        'create table "s.1"."t ""x""" ("c,1;2" varchar(15) constraint "u ""k""" unique,'
        ' n int constraint "n;>0" check (n > 0))',
        'create index "i.1" on "s.1"."t ""x""" (n)',
    )
    changes = tracker.migrate(
        'alter table "s.1"."t ""x""" alter column "c,1;2" type text',
        'alter table "s.1"."t ""x""" alter column n type bigint',
    )
    assert summary(changes) == {
        ("column_type_changed", 's.1.t "x"', "c,1;2", "low"),
        ("column_type_changed", 's.1.t "x"', "n", "high"),
    }
