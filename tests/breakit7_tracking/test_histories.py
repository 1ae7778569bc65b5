"""Oracles 1 and 2 over generated migration histories (hypothesis, seeded).

A history is a few migrations, each a few statements over a small pool of
objects with hostile names (quotes, dots, unicode, keywords, our own JSON
keys, 63-byte names): tables, columns of every tracked type, constraints,
indexes, views, materialized views, overloaded functions, an enum, RLS and
policies, partitions; renames, SET SCHEMA, ALTER SCHEMA RENAME, drops. Each
statement runs in a savepoint, and some savepoints are rolled back (a
failing statement's too: a history may name what no longer exists).

After the history:
* each migration made at most one version, and no version holds a change
  record twice;
* schema_refresh() records nothing (the incremental snapshot is the
  catalog);
* a fresh database given the same schema in one script (pg_dump of the
  tracked schemas) has the same schema hash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgresilience.schema import diff as schema_diff

from .conftest import (
    assert_no_duplicate_records,
    last_version,
    migrate,
    rebuilt_hash,
    refresh_finds_nothing,
)

pytestmark = [pytest.mark.plpython, pytest.mark.pg_dump]

# Names a statement gives (hostile: quotes, dots, unicode, keywords, the
# snapshot's own JSON keys, 63 bytes); what it alters is picked among the
# objects that exist at that point of the history.
SCHEMAS = ["app", 'We.ird "s"', "select"]
TABLES = ["name", "a.b", 'Tâble "q"', "t" * 20 + "é" * 21 + "x"]  # the last: 63 bytes
COLUMNS = ["type", "columns", "Col.One", "ünï"]
CONSTRAINTS = ["table", "k.1"]
INDEXES = ["definition", "i 1"]
VIEWS = ["kind", "v.1"]
FUNCTIONS = ["arguments", "f"]
POLICIES = ["using", "p 1"]
TYPES = ["integer", "bigint", "text", "varchar(20)", "{enum}", "{enum}[]", "ty.dom",
         "numeric(10,2)"]  # fmt: skip

SETUP = (
    "create schema ty;"
    " create type ty.mood as enum ('sad', 'ok', 'happy');"
    " create domain ty.dom as integer check (value > 0);"
    " create schema app;"
    ' create schema "We.ird ""s""";'
    " create table app.name (id integer primary key, type text);"
    ' create table "We.ird ""s"""."a.b" (id integer primary key, columns integer);'
)

APP_SCHEMAS = (
    "select n.nspname::text from pg_namespace as n where n.nspname not like 'pg\\_%%'"
    " and n.nspname not in ('information_schema', 'resilience', 'public', 'ty') order by 1"
)
RELATIONS = (
    "select n.nspname::text, c.relname::text from pg_class as c"
    " join pg_namespace as n on n.oid = c.relnamespace"
    " where c.relkind = any(%s) and n.nspname::text = any(%s) order by 1, 2"
)
COLUMNS_OF = (
    "select a.attname::text from pg_attribute as a where a.attrelid = %s::regclass"
    " and a.attnum > 0 and not a.attisdropped and a.attname <> 'id' order by 1"
)
NAMES_ON = {
    "constraint": "select conname::text from pg_constraint where conrelid = %s::regclass"
    " and contype in ('c', 'u', 'f') order by 1",
    "index": "select c.relname::text from pg_index as i join pg_class as c on c.oid = i.indexrelid"
    " where i.indrelid = %s::regclass and not i.indisprimary order by 1",
    "policy": "select polname::text from pg_policy where polrelid = %s::regclass order by 1",
    "function": "select p.oid::regprocedure::text from pg_proc as p"
    " join pg_namespace as n on n.oid = p.pronamespace where n.nspname::text = any(%s) order by 1",
}
ENUM = "select t.oid::regtype::text from pg_type as t where t.typtype = 'e' order by 1 limit 1"


def _sql(template: str, *args: sql.Composable) -> sql.Composable:
    return sql.SQL(template).format(*args)


def _rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[Any]:
    rows = conn.execute(query, params).fetchall()  # type: ignore[arg-type]
    return [r[0] if len(r) == 1 else r for r in rows]


def _pick(items: list[Any], n: int) -> Any:
    return items[n % len(items)] if items else None


def statement(conn: psycopg.Connection[Any], op: tuple[int, ...]) -> sql.Composable | None:  # noqa: C901
    """The statement of a generated operation (its kind, then choices), on
    the objects that exist now; None where there is nothing to alter."""
    kind, a, b, c, d = op
    schemas = _rows(conn, APP_SCHEMAS)
    s = _pick(schemas, a)
    tables = _rows(conn, RELATIONS, ["r", "p"], schemas)
    views = _rows(conn, RELATIONS, ["v", "m"], schemas)
    enum = _pick(_rows(conn, ENUM), 0) or "text"
    typ = sql.SQL(TYPES[d % len(TYPES)].format(enum=enum))
    new_table = sql.Identifier(s or "app", TABLES[b % 4])
    col, col2 = sql.Identifier(COLUMNS[c % 4]), sql.Identifier(COLUMNS[d % 4])
    k, i, p = sql.Identifier(CONSTRAINTS[d % 2]), sql.Identifier(INDEXES[d % 2]), POLICIES[d % 2]
    if kind in (0, 1):  # new tables
        return _sql(
            ("create table {} (id integer primary key, {} text)",
             "create table {} (id integer not null, {} text) partition by range (id)")[kind],
            new_table, col,
        )  # fmt: skip
    if kind == 2:
        return _sql("create or replace function {}(x {}) returns integer language sql"
                    + ("", " security definer", " set search_path = ''", " stable")[a % 4]
                    + " as 'select 1'",
                    sql.Identifier(s or "app", FUNCTIONS[c % 2]), typ)  # fmt: skip
    if kind == 3:
        return sql.SQL(
            ("alter type {e} add value if not exists 'meh'",
             "alter type {e} rename value 'ok' to 'fine'",
             "alter type {e} rename value 'fine' to 'ok'",
             "alter type {e} rename to " + ("mood2" if enum == "ty.mood" else "mood"))[d % 4]
        ).format(e=sql.SQL(enum))  # fmt: skip
    if kind == 4:
        free = [name for name in SCHEMAS if name not in schemas]
        return (
            _sql("alter schema {} rename to {}", sql.Identifier(s), sql.Identifier(_pick(free, b)))
            if s and free
            else None
        )
    function = _pick(_rows(conn, NAMES_ON["function"], schemas), b)
    if kind == 5 and function:
        return _sql("alter function " + function + (
            " volatile", " security definer", " set work_mem = '2MB'", " rename to {}",
            " set schema {}", " reset all")[d % 6],
            sql.Identifier(FUNCTIONS[c % 2]) if d % 6 == 3 else sql.Identifier(s))  # fmt: skip
    if kind == 6 and function:
        return sql.SQL("drop function " + function + " cascade")
    if kind in (7, 8, 9) and views:
        view = sql.Identifier(*_pick(views, b))
        return _sql(("drop view {} cascade", "alter view {} rename column id to {}",
                     "refresh materialized view {}")[kind - 7], view, col)  # fmt: skip
    if kind == 7:  # no view yet: make one
        return _sql(("create view {} as select * from {}",
                     "create materialized view {} as select * from {}")[d % 2],
                    sql.Identifier(s or "app", VIEWS[c % 2]),
                    sql.Identifier(*(_pick(tables, b) or ("app", "name"))))  # fmt: skip
    target = _pick(tables, b)
    if target is None:
        return None
    table = sql.Identifier(*target)
    if kind == 10:
        return _sql("drop table {} cascade", table)
    if kind == 11:
        return _sql("alter table {} rename to {}", table, sql.Identifier(TABLES[c % 4]))
    if kind == 12:
        return _sql("alter table {} set schema {}", table, sql.Identifier(s))
    if kind == 13:
        return _sql("alter table {} add column {} {}", table, col, typ)
    if kind == 14:
        return _sql("create " + ("", "or replace ")[d % 2] + "view {} as select * from {}",
                    sql.Identifier(s, VIEWS[c % 2]), table)  # fmt: skip
    if kind == 15:
        return _sql("alter table {} " + ("enable", "disable", "force", "no force")[d % 4]
                    + " row level security", table)  # fmt: skip
    if kind == 16:
        return _sql("create policy {} on {} as " + ("permissive", "restrictive")[a % 2]
                    + " to public using (id > 0)", sql.Identifier(p), table)  # fmt: skip
    if kind == 17:
        parted = _rows(conn, RELATIONS, ["p"], schemas)
        if not parted:
            return None
        table, other = sql.Identifier(*_pick(parted, b)), _pick(tables, c)
        return _sql(
            "create table {} partition of {} for values from ({}) to ({})"
            + ("", " partition by range (id)")[b % 2],  # partitions of partitions
            sql.Identifier(s, TABLES[c % 4] + "_" + str(d)), table,
            sql.Literal(10 * d), sql.Literal(10 * d + 10),
        ) if a % 2 else _sql(
            ("alter table {} detach partition {}",
             "alter table {} attach partition {} for values from (0) to (10)")[d % 2],
            table, sql.Identifier(*other),
        )  # fmt: skip
    if kind == 18:
        return _sql("alter table {} add constraint {} foreign key (id) references {} (id)"
                    + ("", " on delete cascade")[d % 2], table, k,
                    sql.Identifier(*_pick(tables, c)))  # fmt: skip
    column = _pick(_rows(conn, COLUMNS_OF, sql.Identifier(*target).as_string(conn)), c)
    constraint = _pick(
        _rows(conn, NAMES_ON["constraint"], sql.Identifier(*target).as_string(conn)), d
    )
    index = _pick(_rows(conn, NAMES_ON["index"], sql.Identifier(*target).as_string(conn)), d)
    policy = _pick(_rows(conn, NAMES_ON["policy"], sql.Identifier(*target).as_string(conn)), d)
    if column is None:
        return None
    colname = sql.Identifier(column)
    if kind == 19:
        return _sql("alter table {} drop column {} cascade", table, colname)
    if kind == 20:
        return _sql("alter table {} rename column {} to {}", table, colname, col2)
    if kind == 21:
        return _sql("alter table {} alter column {} type {} using {}::text::{}",
                    table, colname, typ, colname, typ)  # fmt: skip
    if kind == 22:
        return _sql("alter table {} alter column {} " + (
            "set not null", "drop not null", "set default 1", "drop default")[d % 4],
            table, colname)  # fmt: skip
    if kind == 23:
        return _sql("alter table {} add constraint {} check ({} is not null)"
                    + ("", " not valid")[a % 2], table, k, colname)  # fmt: skip
    if kind == 24:
        return _sql("alter table {} add constraint {} unique ({})"
                    + ("", " deferrable initially deferred")[a % 2], table, k, colname)  # fmt: skip
    if kind == 25:
        return _sql("create " + ("", "unique ")[a % 2] + "index {} on {} ({})", i, table, colname)
    if kind == 26 and constraint:
        name = sql.Identifier(constraint)
        return _sql(("alter table {} validate constraint {}", "alter table {} drop constraint {}",
                     "alter table {} rename constraint {} to {}")[d % 3],
                    table, name, k)  # fmt: skip
    if kind == 27 and index:
        name = sql.Identifier(target[0], index)
        return _sql(("drop index {}", "alter index {} rename to {}")[d % 2], name, i)
    if kind == 28 and policy:
        return _sql(("drop policy {} on {}", "alter policy {} on {} rename to {}")[d % 2],
                    sql.Identifier(policy), table, sql.Identifier(p))  # fmt: skip
    if kind == 29:
        return _sql("alter table {} alter column id add generated by default as identity", table)
    other = sql.Identifier(*_pick(tables, c))
    if kind == 30:
        return _sql("create policy {} on {} using (id in (select id from {}))",
                    sql.Identifier(p), table, other)  # fmt: skip
    if kind == 31:
        return _sql("create or replace function {}() returns bigint language sql"
                    " begin atomic select count(*) from {} where {} is not null; end",
                    sql.Identifier(target[0], FUNCTIONS[d % 2]), table, colname)  # fmt: skip
    if kind == 32:
        sequence = sql.Identifier(target[0], "seq " + COLUMNS[d % 4])
        return _sql("create sequence if not exists {}; alter table {} alter column id"
                    " set default nextval({}::regclass)", sequence, table,
                    sql.Literal(sequence.as_string(conn)))  # fmt: skip
    if kind == 33 and views:
        return _sql("create view {} as select * from {}", sql.Identifier(s, VIEWS[c % 2] + "+"),
                    sql.Identifier(*_pick(views, d)))  # fmt: skip
    return None


KINDS = 34
operation = st.tuples(
    st.integers(0, KINDS - 1),
    st.integers(0, 2),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 7),
)
# migrations of (operation, its savepoint rolled back)
history = st.lists(
    st.lists(st.tuples(operation, st.sampled_from([False, False, False, True])), min_size=1,
             max_size=6),
    min_size=2, max_size=6,
)  # fmt: skip


def _version_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from resilience.schema_versions").fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def run_history(dsn: str, steps: list[list[tuple[tuple[int, ...], bool]]]) -> None:
    """Each step is one migration (one transaction), all from one session."""
    migrate(dsn, SETUP)
    with psycopg.connect(dsn) as conn:
        for step in steps:
            before = _version_count(conn)
            kept = 0
            for op, rolled_back in step:
                conn.execute("savepoint op")
                try:
                    chosen = statement(conn, op)
                    if chosen is None:
                        conn.execute("release savepoint op")
                        continue
                    conn.execute(chosen)
                except psycopg.Error:
                    conn.execute("rollback to savepoint op")
                    continue
                conn.execute("rollback to savepoint op" if rolled_back else "release savepoint op")
                kept += not rolled_back
            conn.commit()
            # one version at most; none where every statement was rolled back
            assert _version_count(conn) - before in ((0, 1) if kept else (0,))


def all_changes(dsn: str) -> list[list[dict[str, Any]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("select x from resilience.schema_changes_since(0) as x").fetchall()
    return [list(r[0]["changes"] or []) for r in rows]


@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=history)
def test_history_leaves_the_snapshot_equal_to_a_full_reread_and_a_one_script_build(
    fresh_db: Callable[[], str], steps: list[list[tuple[tuple[int, ...], bool]]]
) -> None:
    dsn = fresh_db()
    run_history(dsn, steps)
    for changes in all_changes(dsn):
        assert_no_duplicate_records(changes)
    assert refresh_finds_nothing(dsn) == []
    assert_client_recomputes_the_hashes(dsn)
    assert rebuilt_hash(dsn, fresh_db()) == last_version(dsn)["hash"]


def assert_client_recomputes_the_hashes(dsn: str) -> None:
    """The client recomputes every object's hash and the schema hash from the
    snapshot with schema_diff (docs, "Snapshot format"); the version's
    object count is the snapshot's."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        objects = conn.execute(
            "select kind, data, hash, coalesce(table_oid, object_oid)"
            " from resilience.schema_objects"
        ).fetchall()
        row = conn.execute(
            "select hash, object_count from resilience.schema_versions"
            " order by version desc limit 1"
        ).fetchone()
    assert row is not None
    assert [(k, d) for k, d, h, _ in objects if schema_diff.object_hash(k, d) != h] == []
    assert schema_diff.schema_hash([(g, h) for _, _, h, g in objects]) == row[0]
    assert row[1] == len(objects)
