"""tx_run: an atomic batch in one real database transaction, with $ref.
A failure in the middle leaves nothing of the batch, keeps its SQLSTATE and
names the operation (docs/batch_and_security.md)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import begin, call, execute, rows_text, sqlstate_of


@pytest.fixture
def shop(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("""
        create table orders (id bigint generated always as identity primary key, who text not null);
        create table lines (
            id serial primary key,
            order_id bigint not null references orders on delete cascade,
            qty int not null check (qty > 0)
        );
        select resilience.manage_table('orders');
        select resilience.manage_table('lines');
    """)
    return conn


def _state(conn: psycopg.Connection[Any]) -> list[list[str]]:
    return [rows_text(conn, t, "id") for t in ("orders", "lines")]


def _run(conn: psycopg.Connection[Any], operations: list[dict[str, Any]]) -> Any:
    return call(conn, "tx_run", Jsonb(operations))


def test_failure_in_the_middle_leaves_nothing(shop: psycopg.Connection[Any]) -> None:
    _run(shop, [{"table": "orders", "operation": "insert", "data": {"who": "first"}}])
    before = _state(shop)
    operations = [
        {"table": "orders", "operation": "insert", "data": [{"who": "a"}, {"who": "b"}]},
        {"table": "lines", "operation": "insert",
         "data": {"order_id": {"$ref": "0.1.id"}, "qty": 1}},
        {"table": "orders", "operation": "update", "data": {"who": "first!"},
         "match": {"who": "first"}},
        {"table": "lines", "operation": "insert",
         "data": {"order_id": {"$ref": "0.id"}, "qty": 0}},
        {"table": "orders", "operation": "delete", "match": {"who": "first!"}},
    ]  # fmt: skip
    with pytest.raises(psycopg.Error) as caught:
        _run(shop, operations)
    assert caught.value.sqlstate == "23514"
    detail = json.loads(caught.value.diag.message_detail or "{}")
    assert (detail["index"], detail["operation"], detail["table"]) == (3, "insert", "lines")
    assert _state(shop) == before


def test_failure_inside_the_callers_own_transaction(
    shop: psycopg.Connection[Any], dsn: str
) -> None:
    """The caller's own open transaction: the failed batch's statement is
    undone, the transaction is aborted as after any failed statement, and
    the caller's ROLLBACK TO SAVEPOINT keeps its earlier work."""
    with psycopg.connect(dsn) as caller:
        caller.execute("insert into orders (who) values ('mine')")
        caller.execute("savepoint s")
        bad = [
            {"table": "orders", "operation": "insert", "data": {"who": "x"}},
            {"table": "lines", "operation": "insert", "data": {"order_id": -1, "qty": 1}},
        ]
        assert sqlstate_of(_run, caller, bad) == "23503"
        caller.execute("rollback to savepoint s")
        caller.commit()
    assert [r.split(",")[1] for r in rows_text(shop, "orders", "id")] == ["mine)"]
    assert rows_text(shop, "lines", "id") == []


def test_claimed_row_in_the_middle_fails_the_batch_at_once(shop: psycopg.Connection[Any]) -> None:
    _run(shop, [{"table": "orders", "operation": "insert", "data": {"who": "held"}}])
    tx = begin(shop)
    execute(shop, tx, "orders", "update", {"who": "held!"}, {"who": "held"})
    before = _state(shop)
    operations = [
        {"table": "orders", "operation": "insert", "data": {"who": "new"}},
        {"table": "lines", "operation": "insert", "data": {"order_id": {"$ref": "0.id"}, "qty": 2}},
        {"table": "orders", "operation": "delete", "match": {"who": "held!"}},
    ]
    with pytest.raises(psycopg.Error) as caught:
        _run(shop, operations)
    assert caught.value.sqlstate == "55P03"
    assert json.loads(caught.value.diag.message_detail or "{}")["index"] == 2
    assert _state(shop) == before
    call(shop, "tx_rollback", tx)


@pytest.mark.parametrize(
    "reference",
    ["1.id", "0.5.id", "0.nope", "-1.id", "0", "x.id", "0.0.0.id"],
)
def test_bad_references_are_22023_and_write_nothing(
    shop: psycopg.Connection[Any], reference: str
) -> None:
    operations = [
        {"table": "orders", "operation": "insert", "data": {"who": "a"}},
        {"table": "lines", "operation": "insert",
         "data": {"order_id": {"$ref": reference}, "qty": 1}},
    ]  # fmt: skip
    assert sqlstate_of(_run, shop, operations) == "22023"
    assert _state(shop) == [[], []]
