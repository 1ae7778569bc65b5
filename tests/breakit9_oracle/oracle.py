"""The oracle: what a real ROLLBACK leaves is the tables as they were before
the transaction (as a real ROLLBACK TO leaves them as they were at the
savepoint), compared row by row as `row::text` and as the binary image
`record_send(row)`, with the partition each row lives in."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from breakit9_oracle import world

Snapshot = dict[str, list[str]]


@dataclass
class Column:
    name: str
    type: str
    writable: bool  # not generated, not identity ALWAYS


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column]
    key: list[str]

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def key_writable(self) -> bool:
        return all(self.column(k).writable for k in self.key)


def build_world(conn: psycopg.Connection[Any]) -> dict[str, Table]:
    for statement in world.SCHEMA:
        conn.execute(statement)
    for name in world.MANAGED:
        conn.execute("select resilience.manage_table(%s::regclass)", (name,))
    for statement in world.AFTER_MANAGE:
        conn.execute(statement)
    # Without event triggers (a non-superuser install) DDL after manage_table
    # needs manage_table again; with them this regenerates nothing new.
    for name in world.MANAGED:
        conn.execute("select resilience.manage_table(%s::regclass)", (name,))
    tables: dict[str, Table] = {}
    for regclass in world.MANAGED:
        oid, schema, name = conn.execute(
            "select c.oid, n.nspname, c.relname from pg_class c, pg_namespace n"
            " where c.oid = %s::regclass and n.oid = c.relnamespace",
            (regclass,),
        ).fetchone()  # type: ignore[misc]
        columns = [
            Column(n, t, g == "" and i != "a")
            for n, t, g, i in conn.execute(
                "select attname, format_type(atttypid, atttypmod), attgenerated, attidentity"
                " from pg_attribute where attrelid = %s and attnum > 0"
                " and not attisdropped order by attnum",
                (oid,),
            )
        ]
        key = [
            r[0]
            for r in conn.execute(
                "select a.attname from pg_index x, unnest(x.indkey) with ordinality k(n, o),"
                " pg_attribute a where x.indrelid = %s and x.indisprimary"
                " and a.attrelid = x.indrelid and a.attnum = k.n order by k.o",
                (oid,),
            )
        ]
        tables[name] = Table(schema, name, columns, key)
    # Values and keys the pools hold must all be valid input.
    for table in tables.values():
        for column in table.columns:
            for value in pool(table, column.name):
                if value is not None:
                    conn.execute(
                        sql.SQL("select {}::{}").format(sql.Literal(value), sql.SQL(column.type))
                    )
    return tables


def pool(table: Table, column: str) -> list[str | None]:
    if column in world.KEYS[table.name]:
        return list(world.KEYS[table.name][column])
    if (table.name, column) in world.COLUMN_VALUES:
        return world.COLUMN_VALUES[(table.name, column)]
    kind = table.column(column).type
    return [*world.VALUES[kind], *world.LATE_VALUES.get(kind, []), None]


def snapshot(conn: psycopg.Connection[Any], tables: dict[str, Table]) -> Snapshot:
    state: Snapshot = {}
    for table in tables.values():
        rows = conn.execute(
            sql.SQL(
                "select r.tableoid::regclass::text || ' ' || r::text || ' '"
                " || encode(record_send(r), 'hex') from {} r"
            ).format(table.ident)
        ).fetchall()
        state[table.name] = sorted(r[0] for r in rows)
    return state


def diff(expected: Snapshot, actual: Snapshot) -> list[str]:
    lines = []
    for name in expected:
        gone = set(expected[name]) - set(actual[name])
        extra = set(actual[name]) - set(expected[name])
        lines += [f"{name} missing: {r[:300]}" for r in sorted(gone)]
        lines += [f"{name} extra:   {r[:300]}" for r in sorted(extra)]
    return lines


def assert_unclaimed(conn: psycopg.Connection[Any], tables: dict[str, Table]) -> None:
    """After the rollback every row takes a plain write again (no claim is
    left behind), which a real ROLLBACK then takes back."""
    for table in tables.values():
        column = sql.Identifier(next(c.name for c in table.columns if c.writable))
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(sql.SQL("update {} set {} = {}").format(table.ident, column, column))
        except psycopg.errors.LockNotAvailable as e:
            raise AssertionError(f"{table.name} still claimed: {e}") from e


def json_value(column: Column, value: str | None) -> Any:
    if value is None:
        return None
    if column.type in ("json", "jsonb"):
        return json.loads(value)
    return value


class Writer:
    """Runs one random write in one of three ways: tx_execute, tx_run joined
    by the header, or plain SQL joined by the header (as PostgREST does)."""

    def __init__(
        self, conn: psycopg.Connection[Any], tables: dict[str, Table], tx: str, rnd: random.Random
    ):
        self.conn = conn
        self.tables = tables
        self.tx = tx
        self.rnd = rnd

    def headers(self) -> None:
        self.conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": self.tx}),),
        )

    def existing_key(self, table: Table) -> dict[str, str] | None:
        rows = self.conn.execute(
            sql.SQL("select {} from {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::text").format(sql.Identifier(k)) for k in table.key
                ),
                table.ident,
            )
        ).fetchall()
        if not rows:
            return None
        return dict(zip(table.key, self.rnd.choice(sorted(rows)), strict=True))

    def some_values(self, table: Table, with_key: bool) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        if with_key:
            for k in table.key:
                if table.column(k).writable:
                    values[k] = self.rnd.choice(pool(table, k))
        others = [c for c in table.columns if c.writable and c.name not in table.key]
        for column in self.rnd.sample(others, min(len(others), self.rnd.randint(1, 6))):
            values[column.name] = self.rnd.choice(pool(table, column.name))
        return values

    def plan(self, table: Table, operation: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """data and match of one operation, or None when it has nothing to act on."""
        if operation in ("insert", "upsert"):
            return self.some_values(table, with_key=True), {}
        match = self.existing_key(table)
        if match is None:
            return None
        if operation in ("delete", "lock"):
            return {}, match
        change_key = table.key_writable() and self.rnd.random() < 0.35
        return self.some_values(table, with_key=change_key), match

    def api_payload(
        self, table: Table, operation: str, data: dict[str, Any], match: dict[str, str]
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"table": table.ident.as_string(self.conn)}
        op["operation"] = operation
        if operation not in ("delete", "lock"):
            op["data"] = {k: json_value(table.column(k), v) for k, v in data.items()}
        if match:
            op["match"] = match
        return op

    def run(self, mode: str, table: Table, operation: str, batch: int = 1) -> str:
        planned = [self.plan(table, operation) for _ in range(batch)]
        steps = [p for p in planned if p is not None]
        if not steps:
            return "nothing"
        if mode == "run":
            self.headers()
            ops = [self.api_payload(table, operation, d, m) for d, m in steps]
            self.conn.execute("select resilience.tx_run(%s::jsonb)", (json.dumps(ops),))
        else:
            for data, match in steps[: 1 if mode == "execute" else None]:
                self.write(mode, table, operation, data, match)
        return f"{mode} {operation} {table.name} {steps}"[:400]

    def write(
        self, mode: str, table: Table, operation: str, data: dict[str, Any], match: dict[str, str]
    ) -> None:
        """One operation through tx_execute, tx_run or a plain statement."""
        if mode == "plain":
            self.headers()
            self.conn.execute(self.plain(table, operation, data, match))
            return
        p = self.api_payload(table, operation, data, match)
        if mode == "run":
            self.headers()
            self.conn.execute("select resilience.tx_run(%s::jsonb)", (json.dumps([p]),))
            return
        self.conn.execute(
            "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
            (
                self.tx,
                p["table"],
                operation,
                json.dumps(p["data"]) if "data" in p else None,
                json.dumps(p["match"]) if "match" in p else None,
            ),
        )

    def partition(
        self, table: Table, data: dict[str, Any], match: dict[str, str]
    ) -> sql.Identifier:
        """Now and then a statement aimed at the partition that holds the row
        (one that does not move it), as an app may write it."""
        if table.name != "part" or "region" in data or self.rnd.random() < 0.5:
            return table.ident
        name = {"a": "part_a", "b": "part_b"}.get(match.get("region", ""), "part_d")
        return sql.Identifier(table.schema, name)

    def typed(self, table: Table, column: str, value: str | None) -> sql.Composable:
        return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(table.column(column).type))

    def plain(
        self, table: Table, operation: str, data: dict[str, Any], match: dict[str, str]
    ) -> sql.Composable:
        where = sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), self.typed(table, k, v))
            for k, v in match.items()
        )
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), self.typed(table, k, v))
            for k, v in data.items()
        )
        target = self.partition(table, data, match)
        if operation == "delete":
            return sql.SQL("delete from {} where {}").format(target, where)
        if operation == "lock":
            return sql.SQL("select from {} where {} for update").format(target, where)
        if operation == "update":
            return sql.SQL("update {} set {} where {}").format(target, sets, where)
        insert = sql.SQL("insert into {} ({}) values ({})").format(
            table.ident,
            sql.SQL(", ").join(sql.Identifier(k) for k in data),
            sql.SQL(", ").join(self.typed(table, k, v) for k, v in data.items()),
        )
        if operation == "insert" or not table.key:
            return insert
        excluded = [k for k in data if k not in table.key]
        if not excluded:
            return insert + sql.SQL(" on conflict do nothing")
        return insert + sql.SQL(" on conflict ({}) do update set {}").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in table.key),
            sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(k)) for k in excluded
            ),
        )

    def bulk(self, table: Table) -> str:
        """One plain statement over every row of the table (header mode)."""
        self.headers()
        columns = [c for c in table.columns if c.writable and c.name not in table.key]
        column = self.rnd.choice(columns)
        value = self.rnd.choice(pool(table, column.name))
        self.conn.execute(
            sql.SQL("update {} set {} = {}").format(
                table.ident, sql.Identifier(column.name), self.typed(table, column.name, value)
            )
        )
        return f"bulk update {table.name}.{column.name} = {value!r:.60}"
