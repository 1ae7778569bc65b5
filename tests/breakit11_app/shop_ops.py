# ruff: noqa: E501  (SQL reads best on one line)
"""The shop's operations, each both as the SQL statement PostgREST would send
and as the `tx_execute` call supabase-js would make, and the real-transaction
oracle that runs the SQL inside one database transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import strategies as st
from psycopg import sql

from .app import Rest

# What two runs of the same statements must agree on: every column but the
# clock (now()) and the audit's identity (sequences are not transactional).
MASKED = {
    "products": "sku, name, price, tags, attrs",
    "inventory": "sku, on_hand",
    "orders": "id, user_id, status, note, meta",
    "order_items": "order_id, line, sku, qty, unit_price, total",
    "audit": "user_id, tbl, op, row_key",
    "events": "id, at, user_id, kind",
}


def masked(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    out = {}
    for table, cols in MASKED.items():
        query = sql.SQL("select row({})::text from public.{} order by 1").format(
            sql.SQL(cols), sql.Identifier(table)
        )
        out[table] = [r[0] for r in conn.execute(query)]
    return out


@dataclass(frozen=True)
class Op:
    """One app operation: `sql` with `params` as PostgREST runs it; `call`
    the tx_execute arguments (table, operation, data, match), or None when
    only the SQL form exists (a relative stock move)."""

    name: str
    sql: str
    params: tuple[Any, ...]
    call: tuple[str, str, Any, Any] | None


ORDER_IDS = st.integers(1, 4)
LINES = st.integers(1, 3)
SKUS = st.sampled_from(["apple", "APPLE", "Pear", "mug-1", "kiwi"])  # kiwi: no such product
JSONB = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
NOTES = st.none() | st.text(max_size=6).filter(lambda s: "\x00" not in s)
PRICES = st.sampled_from([Decimal("0.50"), Decimal("1.005"), Decimal("0"), Decimal("12345.67")])
DAYS = st.sampled_from(
    [
        "2026-11-30 23:59:59+00",
        "2026-12-01 00:00:00+00",
        "2026-12-31 12:00:00+00",
        "2027-01-02 00:00:00+00",
    ]
)  # the last has no partition: 23514


def _order_new(oid: int, note: str | None, meta: Any) -> Op:
    return Op(
        "order_new",
        "insert into public.orders (id, note, meta) values (%s, %s, %s::jsonb)",
        (oid, note, None if meta is None else json.dumps(meta)),
        ("orders", "insert", {"id": oid, "note": note, "meta": meta}, None),
    )


def _order_status(oid: int, status: str) -> Op:
    return Op(
        "order_status",
        "update public.orders set status = %s::public.order_status where id = %s",
        (status, oid),
        ("orders", "update", {"status": status}, {"id": oid}),
    )


def _order_upsert(oid: int, note: str | None) -> Op:
    return Op(
        "order_upsert",
        "insert into public.orders (id, note) values (%s, %s)"
        " on conflict (id) do update set note = excluded.note",
        (oid, note),
        ("orders", "upsert", {"id": oid, "note": note}, None),
    )


def _order_delete(oid: int) -> Op:
    return Op(
        "order_delete",
        "delete from public.orders where id = %s",
        (oid,),
        ("orders", "delete", None, {"id": oid}),
    )


def _item_add(oid: int, line: int, sku: str, qty: int, price: Decimal) -> Op:
    return Op(
        "item_add",
        "insert into public.order_items (order_id, line, sku, qty, unit_price) values (%s, %s, %s, %s, %s)",
        (oid, line, sku, qty, price),
        (
            "order_items",
            "insert",
            {"order_id": oid, "line": line, "sku": sku, "qty": qty, "unit_price": str(price)},
            None,
        ),
    )


def _item_qty(oid: int, line: int, qty: int) -> Op:
    return Op(
        "item_qty",
        "update public.order_items set qty = %s where order_id = %s and line = %s",
        (qty, oid, line),
        ("order_items", "update", {"qty": qty}, {"order_id": oid, "line": line}),
    )


def _item_delete_sku(oid: int, sku: str) -> Op:
    return Op(
        "item_delete",
        "delete from public.order_items where order_id = %s and sku = %s",
        (oid, sku),
        ("order_items", "delete", None, {"order_id": oid, "sku": sku}),
    )


def _stock_set(sku: str, on_hand: int) -> Op:
    return Op(
        "stock_set",
        "update public.inventory set on_hand = %s where sku = %s",
        (on_hand, sku),
        ("inventory", "update", {"on_hand": on_hand}, {"sku": sku}),
    )


def _stock_take(sku: str, qty: int) -> Op:
    return Op(
        "stock_take",
        "update public.inventory set on_hand = on_hand - %s where sku = %s",
        (qty, sku),
        None,
    )


def _event(eid: int, at: str, kind: str) -> Op:
    return Op(
        "event",
        "insert into public.events (id, at, kind) values (%s, %s, %s)",
        (eid, at, kind),
        ("events", "insert", {"id": eid, "at": at, "kind": kind}, None),
    )


def _event_move(eid: int, at: str) -> Op:
    return Op(
        "event_move",
        "update public.events set at = %s where id = %s",
        (at, eid),
        ("events", "update", {"at": at}, {"id": eid}),
    )


def _lock(oid: int) -> Op:
    return Op(
        "lock",
        "select 1 from public.orders where id = %s for update nowait",
        (oid,),
        ("orders", "lock", None, {"id": oid}),
    )


OPS = st.one_of(
    st.builds(_order_new, ORDER_IDS, NOTES, JSONB),
    st.builds(
        _order_status, ORDER_IDS, st.sampled_from(["draft", "placed", "shipped", "cancelled"])
    ),
    st.builds(_order_upsert, ORDER_IDS, NOTES),
    st.builds(_order_delete, ORDER_IDS),
    st.builds(_item_add, ORDER_IDS, LINES, SKUS, st.integers(-1, 3), PRICES),
    st.builds(_item_qty, ORDER_IDS, LINES, st.integers(0, 5)),
    st.builds(_item_delete_sku, ORDER_IDS, SKUS),
    st.builds(_stock_set, SKUS, st.integers(-1, 20)),
    st.builds(_stock_take, SKUS, st.integers(1, 6)),
    st.builds(_event, st.integers(1, 3), DAYS, st.sampled_from(["placed", "paid"])),
    st.builds(_event_move, st.integers(1, 3), DAYS),
    st.builds(_lock, ORDER_IDS),
)


def claims(sub: str) -> str:
    return json.dumps({"sub": sub, "role": "authenticated"})


class RealTransaction:
    """The oracle: one database transaction of the user, the same statements
    one savepoint each (a failed one is undone alone, as a failed request is),
    deferred constraints checked after each (as each request's commit does)."""

    def __init__(self, conn: psycopg.Connection[Any], sub: str) -> None:
        self.conn = conn
        self.sub = sub
        self._as_user()

    def _as_user(self) -> None:
        self.conn.execute("set local role authenticated")
        self.conn.execute("select set_config('request.jwt.claims', %s, true)", (claims(self.sub),))

    def run(self, op: Op) -> tuple[str | None, int | None]:
        try:
            with self.conn.transaction():
                cursor = self.conn.execute(op.sql, op.params)
                count = cursor.rowcount
                self.conn.execute("set constraints all immediate")
                self.conn.execute("set constraints all deferred")
        except psycopg.Error as error:
            return error.sqlstate, None
        return None, count

    def savepoint(self, name: str) -> None:
        self.conn.execute(sql.SQL("savepoint {}").format(sql.Identifier(name)))

    def rollback_to(self, name: str) -> None:
        self.conn.execute(sql.SQL("rollback to savepoint {}").format(sql.Identifier(name)))

    def masked(self) -> dict[str, list[str]]:
        self.conn.execute("reset role")
        try:
            return masked(self.conn)
        finally:
            self._as_user()

    def rollback(self) -> None:
        self.conn.rollback()


def logical(user: Rest, tx: str, op: Op, via_header: bool) -> tuple[str | None, int | None]:
    """The same operation in logical transaction `tx`: a statement of a
    request carrying `x-resilience-tx`, or an rpc to tx_execute."""
    try:
        if via_header or op.call is None:
            with user.conn.transaction():
                user.conn.execute("set local role authenticated")
                user.conn.execute(
                    "select set_config('request.jwt.claims', %s, true),"
                    " set_config('request.headers', %s, true)",
                    (claims(user.sub or ""), json.dumps({"x-resilience-tx": tx})),
                )
                count = user.conn.execute(op.sql, op.params).rowcount
            return None, count
        table, operation, data, match = op.call
        args: dict[str, Any] = {"tx_id": tx, "table_name": table, "operation": operation}
        if data is not None:
            args["data"] = data
        if match is not None:
            args["match"] = match
        return None, user.rpc("tx_execute", **args)["count"]
    except psycopg.Error as error:
        return error.sqlstate, None
