"""The oracle (issue 10, item 10): a real database transaction.

Hypothesis generates a managed schema (the awkward types of item 2, hostile
names, unique / FK with ON DELETE CASCADE / check constraints, a partitioned
table, a dropped column, keys that are not first or have two columns) and a
sequence of tx_execute operations, header-mode writes, savepoints and
tx_rollback_to, ending in commit or rollback. The schema exists twice, with
the same rows: in one the sequence runs as a logical transaction (every step
its own database transaction, under other session settings than the
comparison), in the other inside ONE real transaction (BEGIN, each step in a
SAVEPOINT so a failing step leaves nothing, user savepoints as SAVEPOINT,
ROLLBACK TO SAVEPOINT, then COMMIT or ROLLBACK). After every step the two
must hold the same rows (`row::text` of every table) and every step must
succeed or fail alike (same SQLSTATE).

With plain writers interleaved, a logical rollback must leave exactly what
the plain writers alone would have produced (their successful writes
replayed in order on a third copy; a replayed write that fails there would
have failed alone), or fail with RZ005 and change nothing. A plain write
that succeeds on a row the logical transaction claimed is a bypassed claim.

Bounded for `make test`; `make fuzz` sets ORACLE_EXAMPLES much higher.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

from .typed_values import (
    HOSTILE_NAMES,
    KINDS,
    SESSION_A,
    SESSION_B,
    SHARED_TYPES,
    Kind,
    apply_session,
    qualified,
    rows_text,
)

EXAMPLES = int(os.environ.get("ORACLE_EXAMPLES", "25"))
# Shrinking a failure costs minutes of database round trips: only in `make
# fuzz`. Without it, a failure still prints its whole schema and steps.
PHASES = (Phase.explicit, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("ORACLE_SHRINK") else ()
)
ORACLE_SETTINGS = settings(
    max_examples=EXAMPLES,
    phases=PHASES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# ORACLE_TAME=1 narrows the generator to plain names, integer and text
# columns, no partitioned table and no `lock`: to tell a harness problem
# from a finding, or to bisect one.
TAME = bool(os.environ.get("ORACLE_TAME"))
NAMES = ("c",) if TAME else HOSTILE_NAMES
KIND_NAMES = ("int", "text") if TAME else tuple(sorted(KINDS))
OPERATIONS = ("insert", "upsert", "update", "delete") + (() if TAME else ("lock",))
TIMEOUT_MS = 600_000
INT_KEYS = ("0", "1", "2", "3", "4", "5")
TEXT_KEYS = ("a", "b")
SAVEPOINTS = ("s1", "s 2", 's"3', "ü")
ALLOWED_PLAIN_ERRORS = {"55P03", "23505", "23503", "23514", "23502"}

# ---------------------------------------------------------------- the schema


@dataclass
class Column:
    name: str
    kind: Kind
    not_null: bool = False


@dataclass
class Table:
    name: str
    key: list[Column]
    values: list[Column]
    key_first: bool = True
    unique: str | None = None  # an integer column with a unique constraint
    check: str | None = None  # an integer column with check (col >= 0)
    parent: Table | None = None  # FK from fk_columns to parent's key
    fk_columns: list[str] = field(default_factory=list)
    on_delete: str = "cascade"
    on_update: str = "no action"
    partitioned: bool = False
    dropped: bool = False

    @property
    def columns(self) -> list[Column]:
        extra = [Column(c, KINDS["int"]) for c in (self.unique, self.check) if c]
        if self.parent is not None:  # FK columns take the parent's key types
            extra += [
                Column(c, k.kind) for c, k in zip(self.fk_columns, self.parent.key, strict=True)
            ]
        if self.key_first:
            return self.key + extra + self.values
        return extra + self.values + self.key

    @property
    def key_names(self) -> list[str]:
        return [c.name for c in self.key]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Table({self.name!r})")


@dataclass
class Schema:
    tables: list[Table]
    seed: list[tuple[Table, dict[str, str | None]]]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(describe(self, []))


def _names(draw: st.DrawFn, count: int, used: set[str]) -> list[str]:
    """``count`` distinct column names, hostile ones first choice."""
    out = []
    for i in range(count):
        name = draw(st.sampled_from(NAMES + (f"c{i}",)))
        base, suffix = name, 0
        while name in used:  # never longer than 63 bytes, or PostgreSQL truncates it
            suffix += 1
            name = f"{base.encode()[:55].decode(errors='ignore')}_{suffix}"
        used.add(name)
        out.append(name)
    return out


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    kinds = st.sampled_from(KIND_NAMES)
    table_names = iter(
        draw(
            st.permutations(
                ["t1", "t2", "t3"] if TAME else ["n", "select", "Tab le", "t", "ü", "w"]
            )
        )
    )
    tables: list[Table] = []

    used: set[str] = set()
    two_keys = draw(st.booleans())
    key_names = _names(draw, 2 if two_keys else 1, used)
    key = [Column(key_names[0], KINDS["int"], True)]
    if two_keys:
        key.append(Column(key_names[1], KINDS["text"], True))
    [unique, check] = _names(draw, 2, used)
    values = [
        Column(name, KINDS[draw(kinds)], draw(st.booleans()) and draw(st.booleans()))
        for name in _names(draw, draw(st.integers(1, 3)), used)
    ]
    parent = Table(
        next(table_names),
        key,
        values,
        key_first=draw(st.booleans()),
        unique=unique if draw(st.booleans()) else None,
        check=check if draw(st.booleans()) else None,
        dropped=draw(st.booleans()),
    )
    tables.append(parent)

    if draw(st.booleans()):
        used = set()
        [child_key] = _names(draw, 1, used)
        fks = _names(draw, len(parent.key), used)
        child_values = [
            Column(name, KINDS[draw(kinds)]) for name in _names(draw, draw(st.integers(0, 2)), used)
        ]
        tables.append(
            Table(
                next(table_names),
                [Column(child_key, KINDS["int"], True)],
                child_values,
                key_first=draw(st.booleans()),
                parent=parent,
                fk_columns=fks,
                on_delete=draw(st.sampled_from(["cascade", "no action", "set null"])),
                on_update=draw(st.sampled_from(["cascade", "no action"])),
            )
        )

    if not TAME and draw(st.booleans()):
        used = set()
        [part_key] = _names(draw, 1, used)
        part_values = [
            Column(name, KINDS[draw(kinds)]) for name in _names(draw, draw(st.integers(1, 2)), used)
        ]
        tables.append(
            Table(
                next(table_names),
                [Column(part_key, KINDS["int"], True)],
                part_values,
                key_first=draw(st.booleans()),
                partitioned=True,
            )
        )

    seed = []
    for table in tables:
        for key_value in draw(st.sets(st.sampled_from(INT_KEYS), max_size=3)):
            row = draw(row_values(table, key_value, full=True))
            seed.append((table, row))
    return Schema(tables, seed)


@st.composite
def row_values(
    draw: st.DrawFn, table: Table, key_value: str | None = None, full: bool = False
) -> dict[str, str | None]:
    """A row's literals: the key, and all columns or some of them."""
    row: dict[str, str | None] = {}
    for column in table.key:
        if column.kind.name == "int":
            row[column.name] = (
                key_value if key_value is not None else draw(st.sampled_from(INT_KEYS))
            )
        else:
            row[column.name] = draw(st.sampled_from(TEXT_KEYS))
    for column in table.columns:
        if column.name in row:
            continue
        if not full and not draw(st.booleans()):
            continue
        row[column.name] = draw(value(table, column))
    return row


def value(table: Table, column: Column) -> st.SearchStrategy[str | None]:
    if column.name == table.unique:
        return st.sampled_from(["0", "1", "2", None])
    if column.name == table.check:
        return st.sampled_from(["-1", "0", "2"])
    if column.name in table.fk_columns:
        index = table.fk_columns.index(column.name)
        assert table.parent is not None
        keys = INT_KEYS[:4] if table.parent.key[index].kind.name == "int" else TEXT_KEYS
        return st.sampled_from(keys)
    nulls = st.just(None) if not column.not_null else st.nothing()
    return st.one_of(st.sampled_from(column.kind.literals), nulls)


def create_schema(conn: psycopg.Connection[Any], schema: str, spec: Schema, manage: bool) -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    for table in spec.tables:
        parts = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.kind.type_sql),
                sql.SQL(" not null" if c.not_null else ""),
            )
            for c in table.columns
        ]
        if table.dropped:
            parts.insert(1, sql.SQL("gone text"))
        parts.append(
            sql.SQL("primary key ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, table.key_names))
            )
        )
        if table.unique:
            parts.append(sql.SQL("unique ({})").format(sql.Identifier(table.unique)))
        if table.check:
            parts.append(sql.SQL("check ({} >= 0)").format(sql.Identifier(table.check)))
        if table.parent is not None:
            parts.append(
                sql.SQL("foreign key ({}) references {} ({}) on delete {} on update {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, table.fk_columns)),
                    qualified(schema, table.parent.name),
                    sql.SQL(", ").join(map(sql.Identifier, table.parent.key_names)),
                    sql.SQL(table.on_delete),
                    sql.SQL(table.on_update),
                )
            )
        statement = sql.SQL("create table {} ({})").format(
            qualified(schema, table.name), sql.SQL(", ").join(parts)
        )
        if table.partitioned:
            statement += sql.SQL(" partition by range ({})").format(
                sql.Identifier(table.key_names[0])
            )
        conn.execute(statement)
        if table.partitioned:
            for number, (low, high) in enumerate(
                [("minvalue", "2"), ("2", "4"), ("4", "maxvalue")]
            ):
                conn.execute(
                    sql.SQL("create table {} partition of {} for values from ({}) to ({})").format(
                        qualified(schema, f"{table.name} p{number}"),
                        qualified(schema, table.name),
                        sql.SQL(low),
                        sql.SQL(high),
                    )
                )
        if table.dropped:
            conn.execute(
                sql.SQL("alter table {} drop column gone").format(qualified(schema, table.name))
            )
        if manage:
            conn.execute(
                "select resilience.manage_table(%s::regclass)",
                (qualified(schema, table.name).as_string(conn),),
            )
    for table, row in spec.seed:
        try:
            with conn.transaction():
                conn.execute(insert_literals(schema, table, row))
        except psycopg.Error:
            pass  # a seed row that breaks a constraint is simply not there


def drop_schema(conn: psycopg.Connection[Any], schema: str, spec: Schema, managed: bool) -> None:
    exists = conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone()
    if not exists:
        return
    if managed:
        for table in reversed(spec.tables):
            try:
                conn.execute(
                    "select resilience.unmanage_table(%s::regclass)",
                    (qualified(schema, table.name).as_string(conn),),
                )
            except psycopg.Error:
                pass  # still claimed by a transaction a failed example left
    conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))


def snapshot(conn: psycopg.Connection[Any], schema: str, spec: Schema) -> dict[str, list[str]]:
    return {t.name: rows_text(conn, schema, t.name) for t in spec.tables}


# ----------------------------------------------------------------- the steps


@dataclass
class Step:
    """One step of a sequence. kind: exec, header, plain, savepoint, rollback_to."""

    kind: str
    table: Table | None = None
    operation: str = ""
    data: Any = None
    match: Any = None
    literals: dict[str, str | None] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    name: str = ""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints failing examples with this

    def __repr__(self) -> str:
        table = self.table.name if self.table else ""
        parts = [self.kind, table, self.operation, self.name]
        if self.data is not None:
            parts.append(f"data={json.dumps(self.data, ensure_ascii=False)[:120]}")
        if self.match is not None:
            parts.append(f"match={json.dumps(self.match, ensure_ascii=False)}")
        if self.literals:
            parts.append(f"set={ {k: (v or '')[:40] for k, v in self.literals.items()} }")
        if self.where:
            parts.append(f"where={self.where}")
        return "Step(" + " ".join(p for p in parts if p) + ")"


def as_data(table: Table, row: dict[str, str | None]) -> dict[str, Any]:
    kinds = {c.name: c.kind for c in table.columns}
    return {name: kinds[name].data(literal) for name, literal in row.items()}


def key_match(draw: st.DrawFn, table: Table) -> dict[str, str]:
    row = draw(row_values(table))
    return {k: row[k] or "" for k in table.key_names}


@st.composite
def write_steps(draw: st.DrawFn, spec: Schema, kinds: tuple[str, ...]) -> Step:
    table = draw(st.sampled_from(spec.tables))
    kind = draw(st.sampled_from(kinds))
    if kind == "exec":
        operation = draw(st.sampled_from(OPERATIONS))
        if operation in ("insert", "upsert"):
            # every row names the same columns, as tx_execute requires
            first = draw(row_values(table))
            rows = [first]
            if draw(st.booleans()):
                other = draw(row_values(table, full=True))
                rows.append({k: other[k] for k in first})
            return Step("exec", table, operation, data=[as_data(table, r) for r in rows])
        where = key_match(draw, table)
        match = as_data(table, where)
        if operation == "update":
            changes = draw(row_values(table))
            if not draw(st.booleans()):  # mostly keep the key, sometimes move it
                for k in table.key_names:
                    changes.pop(k)
            if not changes:
                changes = {table.key_names[0]: draw(st.sampled_from(INT_KEYS))}
            return Step("exec", table, operation, data=as_data(table, changes), match=match)
        return Step("exec", table, operation, match=match)
    operation = draw(st.sampled_from(["insert", "update", "update_range", "delete"]))
    if operation == "insert":
        return Step(kind, table, operation, literals=draw(row_values(table)))
    changes = draw(row_values(table))
    for k in table.key_names:
        changes.pop(k)
    if operation in ("update", "update_range") and not changes:
        operation = "delete"
    return Step(kind, table, operation, literals=changes, where=key_match(draw, table))


@st.composite
def sequences(
    draw: st.DrawFn, spec: Schema, kinds: tuple[str, ...], savepoints: bool
) -> list[Step]:
    steps: list[Step] = []
    live: list[str] = []
    for _ in range(draw(st.integers(1, 10))):
        choice = draw(st.sampled_from(["write", "write", "write", "savepoint", "rollback_to"]))
        if choice == "savepoint" and savepoints:
            name = draw(st.sampled_from(SAVEPOINTS))
            live.append(name)
            steps.append(Step("savepoint", name=name))
        elif choice == "rollback_to" and savepoints and live:
            name = draw(st.sampled_from(live))
            del live[len(live) - 1 - live[::-1].index(name) + 1 :]
            steps.append(Step("rollback_to", name=name))
        else:
            steps.append(draw(write_steps(spec, kinds)))
    return steps


# ------------------------------------------------------------ the statements


def insert_literals(schema: str, table: Table, row: dict[str, str | None]) -> sql.Composed:
    return sql.SQL("insert into {} ({}) values ({}) returning {}").format(
        qualified(schema, table.name),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Literal(v) for v in row.values()),
        sql.SQL(", ").join(map(sql.Identifier, table.key_names)),
    )


def plain_statement(schema: str, step: Step) -> sql.Composed:
    """A header-mode or plain write: what a PostgREST request runs."""
    table = step.table
    assert table is not None
    if step.operation == "insert":
        return insert_literals(schema, table, step.literals)
    target = qualified(schema, table.name)
    returning = sql.SQL(", ").join(map(sql.Identifier, table.key_names))
    first = table.key_names[0]
    if step.operation == "update_range":
        where = sql.SQL("{} >= {}").format(sql.Identifier(first), sql.Literal(step.where[first]))
    else:
        where = sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
            for k, v in step.where.items()
        )
    if step.operation == "delete":
        return sql.SQL("delete from {} where {} returning {}").format(target, where, returning)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
        for k, v in step.literals.items()
    )
    return sql.SQL("update {} set {} where {} returning {}").format(
        target, assignments, where, returning
    )


def exec_statement(schema: str, step: Step) -> tuple[sql.Composed, list[Any]]:
    """What tx_execute promises to do, written as plain SQL for the oracle
    (same input conversion: jsonb_populate_record of the table's row type)."""
    table = step.table
    assert table is not None
    target = qualified(schema, table.name)
    keys = sql.SQL(", ").join(map(sql.Identifier, table.key_names))
    if step.operation in ("insert", "upsert"):
        names = list(step.data[0])
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        statement = sql.SQL(
            "insert into {t} as t ({cols}) select {dcols} "
            "from jsonb_populate_recordset(null::{t}, %s) as d"
        ).format(
            t=target, cols=cols, dcols=sql.SQL(", ").join(sql.Identifier("d", n) for n in names)
        )
        if step.operation == "upsert":
            rest = [n for n in names if n not in table.key_names]
            if rest:
                statement += sql.SQL(" on conflict ({}) do update set {}").format(
                    keys,
                    sql.SQL(", ").join(
                        sql.SQL("{} = excluded.{}").format(sql.Identifier(n), sql.Identifier(n))
                        for n in rest
                    ),
                )
            else:
                statement += sql.SQL(" on conflict ({}) do nothing").format(keys)
        return statement + sql.SQL(" returning t.*"), [Jsonb(step.data)]
    condition = sql.SQL(" and ").join(
        sql.SQL("t.{} is null").format(sql.Identifier(k))
        if v is None
        else sql.SQL("t.{} = m.{}").format(sql.Identifier(k), sql.Identifier(k))
        for k, v in step.match.items()
    )
    matched = sql.SQL("jsonb_populate_record(null::{}, %s) as m").format(target)
    if step.operation == "update":
        names = list(step.data)
        statement = sql.SQL(
            "update {t} as t set ({cols}) = row({dcols}) "
            "from jsonb_populate_record(null::{t}, %s) as d, {m} where {c} returning t.*"
        ).format(
            t=target,
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            dcols=sql.SQL(", ").join(sql.Identifier("d", n) for n in names),
            m=matched,
            c=condition,
        )
        return statement, [Jsonb(step.data), Jsonb(step.match)]
    if step.operation == "delete":
        statement = sql.SQL("delete from {t} as t using {m} where {c} returning t.*").format(
            t=target, m=matched, c=condition
        )
        return statement, [Jsonb(step.match)]
    assert step.operation == "lock"
    statement = sql.SQL("select t.* from {t} as t, {m} where {c} for update of t").format(
        t=target, m=matched, c=condition
    )
    return statement, [Jsonb(step.match)]


Outcome = tuple[str, int]  # ("ok", rows) or (sqlstate, -1)


def attempt(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> Outcome:
    """Run one statement in a savepoint: a failing step leaves nothing."""
    try:
        with conn.transaction():
            cursor = conn.execute(statement, params)
            return ("ok", cursor.rowcount)
    except psycopg.Error as error:
        return (error.sqlstate or "?", -1)


# ------------------------------------------------------------------- the runs


class Runner:
    """Holds the connections: `logical` captures (session settings A),
    `control` savepoints / rolls back / commits (settings B), `plain` is the
    other writer, `neutral` takes snapshots and runs the oracle."""

    def __init__(self, dsn: str) -> None:
        self.logical = psycopg.connect(dsn, autocommit=True)
        self.control = psycopg.connect(dsn, autocommit=True)
        self.plain = psycopg.connect(dsn, autocommit=True)
        self.neutral = psycopg.connect(dsn, autocommit=True)
        apply_session(self.logical, SESSION_A)
        apply_session(self.control, SESSION_B)
        self.counter = itertools.count()
        self.last_error = ""  # the logical side's last error message, for reports

    def close(self) -> None:
        for conn in (self.logical, self.control, self.plain, self.neutral):
            conn.close()

    @contextmanager
    def schemas(self, spec: Schema, managed: list[bool]) -> Iterator[list[str]]:
        """The schema once per entry of ``managed``, with the same rows."""
        number = next(self.counter)
        names = [f"s{number}_{i}" for i in range(len(managed))]
        try:
            for name, manage in zip(names, managed, strict=True):
                create_schema(self.neutral, name, spec, manage)
            yield names
        finally:
            if self.neutral.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.neutral.execute("rollback")
            for name, manage in zip(names, managed, strict=True):
                drop_schema(self.neutral, name, spec, manage)

    def oracle(
        self, schema: str, spec: Schema, steps: list[Step], end: str
    ) -> tuple[list[Outcome], list[dict[str, list[str]]]]:
        """The sequence inside one real transaction; the state after each step."""
        conn = self.neutral
        outcomes: list[Outcome] = []
        states = []
        conn.execute("begin")
        try:
            for step in steps:
                if step.kind == "savepoint":
                    conn.execute(sql.SQL("savepoint {}").format(sql.Identifier(step.name)))
                    outcomes.append(("ok", 0))
                elif step.kind == "rollback_to":
                    conn.execute(
                        sql.SQL("rollback to savepoint {}").format(sql.Identifier(step.name))
                    )
                    outcomes.append(("ok", 0))
                elif step.kind == "exec":
                    outcomes.append(self._savepointed(conn, *exec_statement(schema, step)))
                else:
                    outcomes.append(self._savepointed(conn, plain_statement(schema, step)))
                states.append(snapshot(conn, schema, spec))
        finally:
            conn.execute(end)
        states.append(snapshot(conn, schema, spec))
        return outcomes, states

    @staticmethod
    def _savepointed(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> Outcome:
        conn.execute("savepoint oracle_statement")
        try:
            cursor = conn.execute(statement, params)
            rows = cursor.rowcount
        except psycopg.Error as error:
            conn.execute("rollback to savepoint oracle_statement")
            return (error.sqlstate or "?", -1)
        conn.execute("release savepoint oracle_statement")
        return ("ok", rows)

    def logical_step(self, tx: str, schema: str, step: Step) -> tuple[Outcome, list[Any]]:
        """One step of the logical transaction, its own database transaction."""
        if step.kind in ("savepoint", "rollback_to"):
            function = sql.SQL("select resilience.{}(%s, %s)").format(
                sql.Identifier(f"tx_{step.kind}")
            )
            try:
                self.control.execute(function, (tx, step.name))
            except psycopg.Error as error:
                self.last_error = str(error)
                return (error.sqlstate or "?", -1), []
            return ("ok", 0), []
        assert step.table is not None
        if step.kind == "exec":
            try:
                row = self.logical.execute(
                    "select resilience.tx_execute(%s, %s, %s, %s, %s)",
                    (
                        tx,
                        qualified(schema, step.table.name).as_string(self.logical),
                        step.operation,
                        None if step.data is None else Jsonb(step.data),
                        None if step.match is None else Jsonb(step.match),
                    ),
                ).fetchone()
            except psycopg.Error as error:
                self.last_error = str(error)
                return (error.sqlstate or "?", -1), []
            assert row is not None
            result = row[0]
            columns = {c.name for c in step.table.columns}
            assert result["success"] is True
            for returned in result["data"]:  # rows come back as objects, whatever the names
                assert isinstance(returned, dict) and set(returned) == columns, (returned, columns)
            return ("ok", result["count"]), result["data"]
        statement = plain_statement(schema, step)
        try:
            with self.logical.transaction():
                self.logical.execute(
                    "select set_config('request.headers', %s, true)",
                    (json.dumps({"x-resilience-tx": tx}),),
                )
                cursor = self.logical.execute(statement)
                returned = cursor.fetchall()
        except psycopg.Error as error:
            self.last_error = str(error)
            return (error.sqlstate or "?", -1), []
        names = step.table.key_names
        return ("ok", len(returned)), [dict(zip(names, r, strict=True)) for r in returned]


@pytest.fixture
def runner(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Runner]:
    conn.execute(SHARED_TYPES)
    made = Runner(dsn)
    yield made
    made.close()


def describe(spec: Schema, steps: list[Step]) -> str:
    tables = [
        f"table {t.name!r}: key={t.key_names} cols={[(c.name, c.kind.name) for c in t.columns]}"
        f" partitioned={t.partitioned} dropped={t.dropped} unique={t.unique} check={t.check}"
        f" parent={t.parent.name if t.parent else None} fk={t.fk_columns}"
        f" on_delete={t.on_delete} on_update={t.on_update}"
        for t in spec.tables
    ]
    seed = [
        f"seed {t.name!r}: { {k: (v or '')[:30] for k, v in row.items()} }" for t, row in spec.seed
    ]
    return "\n".join(tables + seed + [repr(s) for s in steps])


# -------------------------------------------------------------------- tests


@ORACLE_SETTINGS
@given(data=st.data())
def test_logical_transaction_matches_a_real_one(runner: Runner, data: st.DataObject) -> None:
    spec = data.draw(schemas(), label="schema")
    steps = data.draw(sequences(spec, ("exec", "header"), savepoints=True), label="steps")
    end = data.draw(st.sampled_from(["commit", "rollback"]), label="end")
    with runner.schemas(spec, [True, False]) as (logical, real):
        expected_outcomes, expected_states = runner.oracle(real, spec, steps, end)
        tx = str(
            runner.logical.execute("select resilience.tx_begin(%s)", (TIMEOUT_MS,)).fetchone()[0]  # type: ignore[index]
        )
        for index, step in enumerate(steps):
            runner.last_error = ""
            outcome, _ = runner.logical_step(tx, logical, step)
            assert outcome == expected_outcomes[index], (index, step, runner.last_error)
            state = snapshot(runner.neutral, logical, spec)
            assert state == expected_states[index], (index, step)
        result = runner.control.execute(f"select resilience.tx_{end}(%s)", (tx,)).fetchone()
        assert result is not None and result[0]["success"] is True
        assert snapshot(runner.neutral, logical, spec) == expected_states[-1], describe(spec, steps)


@ORACLE_SETTINGS
@given(data=st.data())
def test_rollback_with_plain_writers_interleaved(runner: Runner, data: st.DataObject) -> None:
    spec = data.draw(schemas(), label="schema")
    steps = data.draw(sequences(spec, ("exec", "header", "plain"), savepoints=False), label="steps")
    with runner.schemas(spec, [True, False]) as (logical, replica):
        tx = str(
            runner.logical.execute("select resilience.tx_begin(%s)", (TIMEOUT_MS,)).fetchone()[0]  # type: ignore[index]
        )
        claimed: set[tuple[str, tuple[str, ...]]] = set()
        plain_done: list[Step] = []
        for step in steps:
            assert step.table is not None
            keys = step.table.key_names
            if step.kind != "plain":
                outcome, rows = runner.logical_step(tx, logical, step)
                if outcome[0] == "ok" and outcome[1] > 0:
                    for row in rows + ([step.match] if step.match else []):
                        claimed.add((step.table.name, tuple(str(row[k]) for k in keys)))
                continue
            try:
                returned = runner.plain.execute(plain_statement(logical, step)).fetchall()
            except psycopg.Error as error:
                assert error.sqlstate in ALLOWED_PLAIN_ERRORS, (error.sqlstate, str(error), step)
                continue
            touched = {(step.table.name, tuple(str(v) for v in r)) for r in returned}
            assert not touched & claimed, (
                "claim bypassed",
                touched & claimed,
                describe(spec, steps),
            )
            plain_done.append(step)

        before = snapshot(runner.neutral, logical, spec)
        try:
            runner.control.execute("select resilience.tx_rollback(%s)", (tx,))
        except psycopg.Error as error:
            assert error.sqlstate == "RZ005", (error.sqlstate, str(error), describe(spec, steps))
            assert snapshot(runner.neutral, logical, spec) == before, describe(spec, steps)
            return
        for step in plain_done:  # what the plain writers alone would have done
            attempt(runner.neutral, plain_statement(replica, step))
        expected = snapshot(runner.neutral, replica, spec)
        assert snapshot(runner.neutral, logical, spec) == expected, describe(spec, steps)


@settings(ORACLE_SETTINGS, max_examples=max(EXAMPLES // 3, 5))
@given(data=st.data())
def test_the_oracle_agrees_with_itself_without_pgresilience(
    runner: Runner, data: st.DataObject
) -> None:
    """The harness itself: the oracle's sequence run step by step in
    autocommit on an unmanaged copy gives the oracle's committed state."""
    spec = data.draw(schemas(), label="schema")
    steps = data.draw(sequences(spec, ("exec", "header"), savepoints=False), label="steps")
    with runner.schemas(spec, [False, False]) as (plain, real):
        expected_outcomes, expected_states = runner.oracle(real, spec, steps, "commit")
        for index, step in enumerate(steps):
            if step.kind == "exec":
                outcome = attempt(runner.neutral, *exec_statement(plain, step))
            else:
                outcome = attempt(runner.neutral, plain_statement(plain, step))
            assert outcome == expected_outcomes[index]
            assert snapshot(runner.neutral, plain, spec) == expected_states[index]
        assert snapshot(runner.neutral, plain, spec) == expected_states[-1]
