"""Migrations drawn from a vocabulary, each knowing the renames it makes and,
when it runs alone, the change records (type, severity) the docs promise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import strategies as st

from .oracle import Renames

# Schemas with hostile names: quotes, unicode, a reserved word, one that
# starts like the package's own schema, names like the SQL's own aliases.
SCHEMAS = ["app", 'Sch "q" é', "select", "resilience_app", "o"]


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def base_sql(schema: str) -> str:
    s = qi(schema)
    return f"""
create schema {s};
create type {s}.mood as enum ('ok', 'sad');
create table {s}.t1 (a_id int primary key, a1 int, a2 varchar(20), a3 text default 'x',
                     a4 {s}.mood default 'ok', a5 int check (a5 > 0));
create table {s}.t2 (b_id int primary key, b_t1 int references {s}.t1, b5 int not null);
create index i1 on {s}.t1 (a1);
create view {s}.v1 as select a_id as v_id, a1 as v_a1 from {s}.t1;
create function {s}.f1(x int) returns int language sql as 'select x + 1';
create table {s}.pt (k int, d int) partition by range (k);
create table {s}.pt_p1 partition of {s}.pt for values from (0) to (10);
create table {s}.pt_p2 (k int, d int);
create sequence {s}.sq1;
alter table {s}.t1 enable row level security;
create policy p1 on {s}.t1 using (a1 > 0);
create function {s}.trg() returns trigger language plpgsql as 'begin return new; end';
"""


@dataclass
class Step:
    sql: list[str]
    renames: Renames = field(default_factory=Renames)
    # Change records (type, severity) when the step is a migration of its own;
    # None: not checked (the oracle still checks which objects).
    expect: set[tuple[str, str]] | None = None
    concurrent: bool = False  # must run outside a transaction block


class World:
    """Reads what exists, so that drawn steps mostly make sense (one that
    fails anyway is skipped: its migration rolls back)."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, counter: list[int]):
        self.conn, self.schema, self.s, self.counter = conn, schema, qi(schema), counter

    def fresh(self, prefix: str) -> str:
        self.counter[0] += 1
        return f"{prefix}{self.counter[0]}"

    def q(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, (self.schema, *args)).fetchall()

    def tables(self) -> list[str]:
        return sorted(
            r[0]
            for r in self.q(
                "select relname from pg_class"
                " where relnamespace = (select oid from pg_namespace where nspname = %s)"
                " and relkind = 'r' and not relispartition and relname not like 'pt%%'"
            )
        )

    def columns(self, table: str) -> list[tuple[str, str, bool, bool]]:
        return self.q(
            "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef"
            " from pg_attribute a join pg_class c on c.oid = a.attrelid"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum",
            table,
        )

    def rel_objects(self, kind: str) -> list[tuple[str, str]]:
        """(object name, table) of constraints ('c'), indexes ('i'), policies ('p')."""
        queries = {
            "c": "select conname, c.relname from pg_constraint k"
            " join pg_class c on c.oid = k.conrelid",
            "i": "select x.relname, c.relname from pg_index i"
            " join pg_class x on x.oid = i.indexrelid join pg_class c on c.oid = i.indrelid"
            " where not exists (select from pg_constraint where conindid = x.oid)",
            "p": "select polname, c.relname from pg_policy p join pg_class c on c.oid = p.polrelid",
        }
        query = queries[kind]
        glue = " and " if " where " in query else " where "
        return sorted(
            (r[0], r[1])
            for r in self.q(
                query + glue + "c.relnamespace = (select oid from pg_namespace where nspname = %s)"
                " and c.relname not like 'pt%%'"
            )
        )


def _t(w: World, table: str) -> str:
    return f"{w.s}.{qi(table)}"


Draw = Callable[[Any], Any]


def steps(w: World, draw: Draw) -> Step:  # noqa: C901 (a vocabulary)
    tables = w.tables()
    table = draw(st.sampled_from(tables)) if tables else None
    cols = w.columns(table) if table else []
    col = draw(st.sampled_from(cols)) if cols else None
    s = w.s
    choice = draw(
        st.sampled_from(
            [
                "add_column",
                "drop_column",
                "rename_column",
                "type_change",
                "default",
                "not_null",
                "check",
                "unique",
                "fk",
                "drop_constraint",
                "rename_constraint",
                "deferrable",
                "create_index",
                "drop_index",
                "rename_index",
                "index_concurrently",
                "view",
                "function",
                "policy",
                "rls",
                "enum",
                "sequence",
                "comment",
                "grant",
                "trigger",
                "partition",
                "create_table",
                "drop_table",
                "rename_table",
            ]
        )
    )
    if table is None or col is None:
        choice = "create_table"
    t = _t(w, table) if table else ""
    c = qi(col[0]) if col else ""
    if choice == "add_column":
        name = w.fresh("n")
        kind = draw(st.sampled_from(["int", "text default 'a'", "int not null default 0"]))
        return Step([f"alter table {t} add column {name} {kind}"], expect={("column_added", "low")})
    if choice == "drop_column":
        return Step([f"alter table {t} drop column {c}"])
    if choice == "rename_column":
        new = w.fresh(col[0].rstrip("0123456789_r") + "_r")
        return Step(
            [f"alter table {t} rename column {c} to {new}"],
            Renames(words=[(col[0], new)]),
            expect={("column_renamed", "high")},
        )
    if choice == "type_change":
        typ = col[1]
        if typ == "integer":
            target = draw(st.sampled_from(["bigint", "integer"]))
        elif typ.startswith("character varying"):
            target = draw(st.sampled_from(["text", "varchar(200)", "varchar(5)"]))
        elif typ == "text":
            target = draw(st.sampled_from(["varchar(50)", "text"]))
        else:
            target = typ
        expect = None
        if target == typ or (target == "integer" and typ == "integer"):
            expect = set()
        return Step([f"alter table {t} alter column {c} type {target}"], expect=expect)
    if choice == "default":
        if draw(st.booleans()):
            value = {"integer": "7", "bigint": "7"}.get(col[1], "'d'")
            if col[1].startswith(("character", "text")) or col[1] in ("integer", "bigint"):
                return Step(
                    [f"alter table {t} alter column {c} set default {value}"],
                    expect=None if col[3] else {("default_changed", "low")},
                )
        return Step([f"alter table {t} alter column {c} drop default"])
    if choice == "not_null":
        if col[2]:
            return Step([f"alter table {t} alter column {c} drop not null"])
        return Step(
            [f"alter table {t} alter column {c} set not null"],
            expect={("nullability_changed", "high")},
        )
    if choice == "check":
        not_valid = draw(st.booleans())
        cond = f"{c} is not null or true"
        return Step(
            [
                f"alter table {t} add constraint {w.fresh('ck')} check ({cond})"
                + (" not valid" if not_valid else "")
            ],
            expect={("constraint_added", "low" if not_valid else "medium")},
        )
    if choice == "unique":
        return Step(
            [f"alter table {t} add constraint {w.fresh('uq')} unique ({c})"],
            expect={("constraint_added", "medium")},
        )
    if choice == "fk":
        return Step([f"alter table {t} add foreign key ({c}) references {s}.t1"])
    cons = w.rel_objects("c")
    if choice == "deferrable" and cons:
        name, on = draw(st.sampled_from(cons))
        # ALTER CONSTRAINT takes foreign keys only (others fail: skipped)
        return Step(
            [f"alter table {_t(w, on)} alter constraint {qi(name)} deferrable initially deferred"],
            expect={("constraint_changed", "low")},
        )
    if choice in ("drop_constraint", "rename_constraint") and cons:
        name, on = draw(st.sampled_from(cons))
        if choice == "drop_constraint":
            return Step([f"alter table {_t(w, on)} drop constraint {qi(name)}"])
        new = w.fresh("con")
        return Step(
            [f"alter table {_t(w, on)} rename constraint {qi(name)} to {new}"],
            Renames(words=[(name, new)]),
            expect={("constraint_renamed", "low")},
        )
    if choice == "create_index":
        return Step(
            [f"create index {w.fresh('ix')} on {t} ({c})"], expect={("index_added", "medium")}
        )
    if choice == "index_concurrently":
        return Step(
            [f"create index concurrently {w.fresh('ix')} on {t} ({c})"],
            expect={("index_added", "low")},
            concurrent=True,
        )
    idx = w.rel_objects("i")
    if choice in ("drop_index", "rename_index") and idx:
        name, on = draw(st.sampled_from(idx))
        if choice == "drop_index":
            conc = draw(st.booleans())
            return Step(
                [f"drop index {'concurrently ' if conc else ''}{s}.{qi(name)}"],
                expect={("index_dropped", "medium")},
                concurrent=conc,
            )
        new = w.fresh("idx")
        return Step(
            [f"alter index {s}.{qi(name)} rename to {new}"],
            Renames(words=[(name, new)]),
            expect={("index_renamed", "low")},
        )
    if choice == "view":
        variant = draw(st.sampled_from(["same", "where", "drop_create_same", "add_column"]))
        body = {
            "same": "select a_id as v_id, a1 as v_a1 from {s}.t1",
            "drop_create_same": "select a_id as v_id, a1 as v_a1 from {s}.t1",
            "where": "select a_id as v_id, a1 as v_a1 from {s}.t1 where a_id > 0",
            "add_column": "select a_id as v_id, a1 as v_a1, 1 as v_one from {s}.t1",
        }[variant].format(s=s)
        pre = [f"drop view {s}.v1"] if variant == "drop_create_same" else []
        return Step(
            pre + [f"create or replace view {s}.v1 as {body}"],
            expect=set() if variant in ("same", "drop_create_same") else None,
        )
    if choice == "function":
        variant = draw(st.sampled_from(["same", "body", "overload", "result", "drop_create_same"]))
        same = (
            f"create or replace function {s}.f1(x int) returns int language sql as 'select x + 1'"
        )
        sql = {
            "same": [same],
            "drop_create_same": [f"drop function {s}.f1(int)", same],
            "body": [same.replace("x + 1", "x + 2")],
            "overload": [
                f"create or replace function {s}.f1(x bigint) returns int language sql"
                " as 'select 1'"
            ],
            "result": [
                f"drop function {s}.f1(int)",
                f"create function {s}.f1(x int) returns bigint language sql as 'select x + 1'",
            ],
        }[variant]
        expect = {
            "same": set(),
            "drop_create_same": set(),
            "body": {("function_changed", "medium")},
            "overload": {("function_added", "low")},
            "result": {("function_changed", "high")},
        }[variant]
        return Step(sql, expect=expect)
    if choice == "policy":
        pols = w.rel_objects("p")
        variant = draw(st.sampled_from(["create", "alter", "drop", "rename", "recreate_same"]))
        if variant == "create" or not pols:
            return Step(
                [f"create policy {w.fresh('pol')} on {t} using ({c} is not null)"],
                expect={("policy_changed", "medium")},
            )
        name, on = draw(st.sampled_from(pols))
        p = f"{qi(name)} on {_t(w, on)}"
        if variant == "alter":
            return Step([f"alter policy {p} using (false)"], expect={("policy_changed", "high")})
        if variant == "drop":
            return Step([f"drop policy {p}"], expect={("policy_changed", "high")})
        if variant == "recreate_same":
            definition = w.conn.execute(
                "select pg_get_expr(polqual, polrelid) from pg_policy p"
                " join pg_class c on c.oid = p.polrelid"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relname = %s and polname = %s"
                " and polcmd = '*' and polpermissive and polroles = '{0}'",
                (w.schema, on, name),
            ).fetchone()
            if definition is None or definition[0] is None:
                return Step([f"drop policy {p}"])
            return Step(
                [f"drop policy {p}", f"create policy {p} using ({definition[0]})"], expect=set()
            )
        new = w.fresh("pol")
        return Step(
            [f"alter policy {p} rename to {new}"],
            Renames(words=[(name, new)]),
            expect={("policy_changed", "low")},
        )
    if choice == "rls":
        variant = draw(st.sampled_from(["enable", "disable", "force", "no force"]))
        return Step([f"alter table {t} {variant} row level security"])
    if choice == "enum":
        values = [
            r[0]
            for r in w.q(
                "select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid"
                " join pg_namespace n on n.oid = t.typnamespace"
                " where n.nspname = %s and t.typname = 'mood' order by e.enumsortorder"
            )
        ]
        if draw(st.booleans()):
            return Step(
                [f"alter type {s}.mood add value '{w.fresh('v')}'"],
                expect={("enum_changed", "low")},
            )
        old = draw(st.sampled_from(values))
        new = w.fresh("val")
        return Step(
            [f"alter type {s}.mood rename value '{old}' to '{new}'"],
            Renames(literals=[(old, new)]),
            expect={("enum_changed", "high")},
        )
    if choice == "sequence":
        variant = draw(st.sampled_from(["owned_default", "rename", "create"]))
        seqs = [
            r[0]
            for r in w.q(
                "select relname from pg_class where relkind = 'S'"
                " and relnamespace = (select oid from pg_namespace where nspname = %s)"
            )
        ]
        if variant == "create" or not seqs:
            return Step([f"create sequence {s}.{w.fresh('sq')}"], expect=set())
        seq = draw(st.sampled_from(seqs))
        if variant == "owned_default" and col[1] in ("integer", "bigint"):
            return Step(
                [
                    f"alter sequence {s}.{qi(seq)} owned by {t}.{c}",
                    f"alter table {t} alter column {c} set default nextval('{s}.{qi(seq)}')",
                ]
            )
        new = w.fresh("sq")
        # A default naming the sequence prints the new name: not a change
        # of the column (the docs: text that changed only by a rename).
        return Step(
            [f"alter sequence {s}.{qi(seq)} rename to {new}"],
            Renames(words=[(seq, new)]),
        )
    if choice == "comment":
        return Step(
            [f"comment on table {t} is 'c'", f"comment on column {t}.{c} is 'c'"], expect=set()
        )
    if choice == "grant":
        return Step(
            [f"grant select on {t} to public", f"grant usage on schema {s} to public"],
            expect=set(),
        )
    if choice == "trigger":
        return Step(
            [
                f"create trigger {w.fresh('tg')} before insert on {t}"
                f" for each row execute function {s}.trg()"
            ],
            expect=set(),
        )
    if choice == "partition":
        attached = {
            r[0]
            for r in w.q(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s"
            )
        }
        if "pt_p2" in attached:
            return Step(
                [f"alter table {s}.pt detach partition {s}.pt_p2"],
                expect={("table_changed", "high")},
            )
        return Step(
            [f"alter table {s}.pt attach partition {s}.pt_p2 for values from (10) to (20)"],
            expect={("table_changed", "medium")},
        )
    if choice == "drop_table":
        return Step([f"drop table {t}"], expect={("table_dropped", "critical")})
    if choice == "rename_table":
        new = w.fresh("tr")
        return Step(
            [f"alter table {t} rename to {new}"],
            Renames(words=[(table, new)]),
            expect={("table_renamed", "high")},
        )
    name = w.fresh("t")
    return Step(
        [f"create table {s}.{name} ({name}_id int primary key, {name}_v text not null)"],
        expect={("table_added", "low")},
    )
