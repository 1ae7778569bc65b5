"""Hand-picked migrations PostgreSQL handles in surprising ways, each checked
against the pg_dump oracle in both diff modes, and migrations followed by
their inverse giving back the original hash."""

from __future__ import annotations

from typing import Any

import pytest

from .oracle import Renames, Snapshot
from .test_dump_oracle import Oracle, _current
from .vocabulary import Step, base_sql, qi

pytestmark = [pytest.mark.pg_dump]

S = qi('Sch "q" é')

# (sql, renames (words), expected (type, severity) set or None: oracle only)
CASES: list[tuple[list[str], list[tuple[str, str]], set[tuple[str, str]] | None]] = [
    # no-ops: nothing changed, no change, same hash
    ([f"alter table {S}.t1 alter column a5 type int"], [], set()),
    (
        [f"create or replace function {S}.f1(x int) returns int language sql as 'select x + 1'"],
        [],
        set(),
    ),
    ([f"create or replace view {S}.v1 as select a_id as v_id, a1 as v_a1 from {S}.t1"], [], set()),
    (
        [f"drop policy p1 on {S}.t1", f"create policy p1 on {S}.t1 using (a1 > 0)"],
        [],
        set(),
    ),
    # re-created objects: one change with the real difference
    ([f"alter table {S}.t1 alter column a2 type text"], [], {("column_type_changed", "low")}),
    (
        [f"create unique index ux on {S}.t2 (b5)"],
        [],
        {("index_added", "medium")},
    ),
    (
        [f"alter table {S}.t2 add constraint ux unique using index ux"],
        [],
        {("constraint_added", "low")},
    ),
    (
        [f"alter table {S}.t2 alter column b5 type bigint"],
        [],
        {("column_type_changed", "high")},
    ),
    (
        [f"alter table {S}.t2 alter column b_t1 type bigint"],
        [],
        {("column_type_changed", "high")},
    ),
    # renames: a sequence a default uses, an enum value a default uses
    (
        [
            f"alter sequence {S}.sq1 owned by {S}.t2.b5",
            f"alter table {S}.t2 alter column b5 set default nextval('{S}.sq1')",
        ],
        [],
        {("default_changed", "low")},
    ),
    (
        [f"alter type {S}.mood rename value 'ok' to 'fine'"],
        [("'ok'", "'fine'")],
        {("enum_changed", "high")},
    ),
    ([f"alter type {S}.mood rename to feeling"], [("mood", "feeling")], None),
    ([f'alter table {S}.t1 rename to "Big T"'], [("t1", '"Big T"')], {("table_renamed", "high")}),
    # partitions
    (
        [f"alter table {S}.pt attach partition {S}.pt_p2 for values from (10) to (20)"],
        [],
        {("table_changed", "medium")},
    ),
    ([f"alter table {S}.pt detach partition {S}.pt_p1"], [], {("table_changed", "high")}),
    # RLS
    ([f'alter table {S}."Big T" force row level security'], [], {("rls_changed", "medium")}),
    ([f'alter table {S}."Big T" disable row level security'], [], {("rls_changed", "critical")}),
    # untracked: comments, grants, triggers
    (
        [
            f"comment on table {S}.t2 is 'x'",
            f"grant select on {S}.t2 to public",
            f"create trigger tg before insert on {S}.t2 for each row execute function {S}.trg()",
        ],
        [],
        set(),
    ),
    # a table whose name is a reserved word and an internal-looking alias
    ([f'create table {S}."select" (o int, "w""x" text)'], [], {("table_added", "low")}),
    ([f'create materialized view {S}.mv as select o from {S}."select"'], [], None),
    ([f"create index on {S}.mv (o)"], [], None),
    (
        [
            f"drop materialized view {S}.mv",
            f'create materialized view {S}.mv as select o from {S}."select"',
        ],
        [],
        None,
    ),
    (
        [f"create procedure {S}.pr(a int) language sql as 'select 1'"],
        [],
        {("function_added", "low")},
    ),
    ([f'drop table {S}."select" cascade'], [], None),
    # functions: attributes, rename
    ([f"alter function {S}.f1(int) stable"], [], {("function_changed", "medium")}),
    ([f"alter function {S}.f1(int) set search_path = ''"], [], {("function_changed", "medium")}),
    ([f"alter function {S}.f1(int) rename to f9"], [("f1", "f9")], {("function_renamed", "high")}),
    # columns: generated, collation, a quoted rename
    (
        [f'alter table {S}."Big T" add column g int generated always as (a1 * 2) stored'],
        [],
        {("column_added", "high")},
    ),
    ([f'alter table {S}."Big T" alter column a2 type text collate "C"'], [], None),
    ([f'alter table {S}."Big T" rename column a1 to "select"'], [("a1", '"select"')], None),
    # constraints: exclusion, deferrable, NOT VALID then VALIDATE
    ([f"alter table {S}.t2 add constraint ex exclude using btree (b5 with =)"], [], None),
    (
        [f"alter table {S}.t2 alter constraint t2_b_t1_fkey deferrable initially deferred"],
        [],
        {("constraint_changed", "low")},
    ),
    (
        [f"alter table {S}.t2 add constraint ck check (b5 > 0) not valid"],
        [],
        {("constraint_added", "low")},
    ),
    ([f"alter table {S}.t2 validate constraint ck"], [], {("constraint_changed", "low")}),
    # policies with roles
    (
        [f'create policy pr on {S}."Big T" as restrictive for select to anon using (true)'],
        [],
        None,
    ),
    ([f'alter policy pr on {S}."Big T" to authenticated, anon'], [], {("policy_changed", "high")}),
    ([f'drop policy pr on {S}."Big T"'], [], {("policy_changed", "critical")}),
    # partitions: a new partition, an index on the tree, a unlogged table set logged
    ([f"create table {S}.pt_p3 partition of {S}.pt for values from (20) to (30)"], [], None),
    ([f"create index pti on {S}.pt (k)"], [], None),
    ([f"create unlogged table {S}.u (x int)"], [], {("table_added", "low")}),
    ([f"alter table {S}.u set logged"], [], {("table_changed", "high")}),
    # domains are not tracked; a column of a domain type is
    ([f"create domain {S}.dm as int check (value > 0)"], [], set()),
    ([f"alter table {S}.u add column dmc {S}.dm"], [], {("column_added", "low")}),
]


def run_cases(oracle: Oracle) -> None:
    conn = oracle.conn
    with conn.transaction():
        conn.execute(base_sql('Sch "q" é'))
    before = Snapshot.take(oracle.dsn, conn)
    current = _current(conn)
    before.version, before.hash = current["version"], current["hash"]
    for sql, words, expect in CASES:
        with conn.transaction():
            for q in sql:
                conn.execute(q)
        renames = Renames(
            words=[w for w in words if not w[0].startswith("'")],
            literals=[(a.strip("'"), b.strip("'")) for a, b in words if a.startswith("'")],
        )
        before = oracle.check([Step(sql, renames, expect=expect)], before)


@pytest.mark.parametrize("diff_at_commit", [True, False], ids=["diff_at_commit", "diff_at_read"])
def test_hand_picked_migrations_report_exactly_what_pg_dump_sees_changed(
    server: Any, template_db: str, diff_at_commit: bool
) -> None:
    """A user would see a no-op migration reported as a change, a key
    PostgreSQL rebuilt reported dropped and added, or a hash that moved
    for a comment."""
    oracle = Oracle(server, template_db, diff_at_commit)
    try:
        run_cases(oracle)
    finally:
        oracle.close()


INVERSES = [
    ("alter table {s}.t1 add column z int", "alter table {s}.t1 drop column z"),
    ("alter table {s}.t1 rename column a1 to a1x", "alter table {s}.t1 rename column a1x to a1"),
    ("alter table {s}.t1 rename to t1x", "alter table {s}.t1x rename to t1"),
    (
        "alter table {s}.t2 alter column b5 type bigint",
        "alter table {s}.t2 alter column b5 type int",
    ),
    (
        "alter table {s}.t1 alter column a2 type text",
        "alter table {s}.t1 alter column a2 type varchar(20)",
    ),
    (
        "alter table {s}.t1 alter column a3 drop default",
        "alter table {s}.t1 alter column a3 set default 'x'",
    ),
    (
        "alter table {s}.t2 alter column b5 drop not null",
        "alter table {s}.t2 alter column b5 set not null",
    ),
    ("drop index {s}.i1", "create index i1 on {s}.t1 (a1)"),
    (
        "alter table {s}.t1 drop constraint t1_a5_check",
        "alter table {s}.t1 add constraint t1_a5_check check (a5 > 0)",
    ),
    (
        "alter table {s}.t2 drop constraint t2_b_t1_fkey",
        "alter table {s}.t2 add constraint t2_b_t1_fkey foreign key (b_t1) references {s}.t1",
    ),
    ("alter table {s}.t2 drop constraint t2_pkey", "alter table {s}.t2 add primary key (b_id)"),
    ("drop view {s}.v1", "create view {s}.v1 as select a_id as v_id, a1 as v_a1 from {s}.t1"),
    (
        "drop function {s}.f1(int)",
        "create function {s}.f1(x int) returns int language sql as 'select x + 1'",
    ),
    ("drop policy p1 on {s}.t1", "create policy p1 on {s}.t1 using (a1 > 0)"),
    (
        "alter table {s}.t1 disable row level security",
        "alter table {s}.t1 enable row level security",
    ),
    (
        "alter type {s}.mood rename value 'ok' to 'fine'",
        "alter type {s}.mood rename value 'fine' to 'ok'",
    ),
    (
        "alter table {s}.pt detach partition {s}.pt_p1",
        "alter table {s}.pt attach partition {s}.pt_p1 for values from (0) to (10)",
    ),
    ("drop table {s}.pt_p2", "create table {s}.pt_p2 (k int, d int)"),
]


def test_a_migration_then_its_inverse_gives_back_the_original_hash(
    server: Any, template_db: str
) -> None:
    """A user would see a schema that is back where it was carry another
    hash (caches keyed by it never hit again), or a round trip that left
    the dump different while the hash says equal."""
    oracle = Oracle(server, template_db, True)
    conn = oracle.conn
    try:
        with conn.transaction():
            conn.execute(base_sql("select"))
        original = Snapshot.take(oracle.dsn, conn).objects
        start = _current(conn)["hash"]
        for forward, backward in INVERSES:
            conn.execute(forward.format(s=qi("select")))
            assert _current(conn)["hash"] != start, forward
            conn.execute(backward.format(s=qi("select")))
            assert _current(conn)["hash"] == start, f"{forward} / {backward}"
        assert Snapshot.take(oracle.dsn, conn).objects.keys() == original.keys()
        refreshed = conn.execute("select resilience.schema_refresh()").fetchone()[0]
        assert refreshed["hash"] == start and not refreshed["changed"], refreshed
    finally:
        oracle.close()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limitation: sequences are not in the snapshot, so a default whose text changed"
    " only because its sequence was renamed reads as default_changed"
    " (docs/schema_tracking.md Limits)",
)
def test_renaming_a_sequence_a_default_uses_is_no_change(server: Any, template_db: str) -> None:
    """A user would see `ALTER SEQUENCE s RENAME` reported as a default change
    of every column whose default calls nextval() on it, though no default
    changed: the text names the sequence by its new name."""
    oracle = Oracle(server, template_db, True)
    conn = oracle.conn
    try:
        with conn.transaction():
            conn.execute(base_sql("app"))
            conn.execute("alter table app.t2 alter column b5 set default nextval('app.sq1')")
        before = Snapshot.take(oracle.dsn, conn)
        current = _current(conn)
        before.version, before.hash = current["version"], current["hash"]
        conn.execute("alter sequence app.sq1 rename to sq_renamed")
        oracle.check(
            [
                Step(
                    ["alter sequence app.sq1 rename to sq_renamed"],
                    Renames([("sq1", "sq_renamed")]),
                )
            ],
            before,
        )
    finally:
        oracle.close()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limitation: table storage parameters, REPLICA IDENTITY, CLUSTER ON, column"
    " statistics/storage/compression and rules are not in the snapshot"
    " (docs/schema_tracking.md Limits)",
)
@pytest.mark.parametrize(
    "statement",
    [
        "alter table app.t1 replica identity full",
        "create rule r as on insert to app.t2 do instead nothing",
    ],
    ids=["replica_identity", "rule"],
)
def test_table_properties_pg_dump_shows_are_reported(
    server: Any, template_db: str, statement: str
) -> None:
    """A user would see no version for a migration pg_dump shows changed the
    table: `REPLICA IDENTITY FULL` (what logical replication sends) or a rule
    `DO INSTEAD NOTHING` (inserts silently vanish)."""
    oracle = Oracle(server, template_db, True)
    conn = oracle.conn
    try:
        with conn.transaction():
            conn.execute(base_sql("app"))
        before = Snapshot.take(oracle.dsn, conn)
        current = _current(conn)
        before.version, before.hash = current["version"], current["hash"]
        conn.execute(statement)
        oracle.check([Step([statement])], before)
    finally:
        oracle.close()
