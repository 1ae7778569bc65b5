"""Objects PostgreSQL rebuilds under a new OID (indexes and constraints on a
column whose type changes: partial and expression indexes, EXCLUDE, foreign
keys of other tables, partitions' indexes) are no change of their own."""

from __future__ import annotations

import pytest

from .conftest import Tracker


@pytest.mark.parametrize(
    ("setup", "migration", "expected"),
    [
        (
            (
                "create extension btree_gist",
                "create table t (id int primary key check (id > 0), r int)",
                "create index ti on t ((id + 1)) where id > 5",
                "create table u (tid int references t on delete cascade)",
                "alter table t add constraint ex exclude using gist (r with =)",
            ),
            ("alter table t alter id type bigint", "alter table t alter r type bigint"),
            {("public.t", "id", "high"), ("public.t", "r", "high")},
        ),
        (
            (
                "create table t (id varchar(10) primary key)",
                "create table u (tid varchar(10) references t)",
                "create index on u (tid)",
            ),
            (
                "alter table u alter tid type varchar(20)",
                "alter table t alter id type varchar(20)",
            ),
            {("public.t", "id", "low"), ("public.u", "tid", "low")},
        ),
        (
            (
                "create table p (id int, k int) partition by range (id)",
                "create table p1 partition of p for values from (0) to (10)",
                "create index on p (k)",
                "alter table p add primary key (id)",
            ),
            ("alter table p alter k type bigint",),
            {("public.p", "k", "high"), ("public.p1", "k", "high")},
        ),
    ],
    ids=["exclude-partial-expression-fk", "fk-both-sides-widened", "partitioned"],
)
def test_rebuilt_keys_and_indexes_are_no_change(
    tracker: Tracker,
    setup: tuple[str, ...],
    migration: tuple[str, ...],
    expected: set[tuple[str, str, str]],
) -> None:
    for statement in setup:
        tracker.conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
    changes = tracker.migrate(*migration)
    assert {c["type"] for c in changes} == {"column_type_changed"}
    assert {(c["table"], c["column"], c["severity"]) for c in changes} == expected
