# ruff: noqa: E501  (SQL reads best on one line)
"""Every failure a shop request can meet has its documented SQLSTATE
(docs/errors.md) and leaves nothing half-done: the rows, the transaction's
status and row count are as before the failing call."""

from __future__ import annotations

import time

import pytest

from .app import ALICE, snapshot, sqlstate


def _calls(a, tx):  # type: ignore[no-untyped-def]
    h = a.in_tx(tx)
    x = lambda **k: a.rpc("tx_execute", tx_id=tx, **k)  # noqa: E731
    return {
        "unknown table": (
            lambda: x(table_name="basket", operation="insert", data={"id": 1}),
            "42P01",
        ),
        "unknown column": (
            lambda: x(table_name="orders", operation="insert", data={"id": 2, "colour": 1}),
            "42703",
        ),
        "bad operation": (
            lambda: x(table_name="orders", operation="merge", data={"id": 2}),
            "22023",
        ),
        "update without match": (
            lambda: x(table_name="orders", operation="update", data={"note": "n"}),
            "22023",
        ),
        "generated column": (
            lambda: x(
                table_name="order_items",
                operation="update",
                data={"total": 1},
                match={"order_id": 1},
            ),
            "428C9",
        ),
        "no grant (products)": (
            lambda: x(
                table_name="products",
                operation="insert",
                data={"sku": "kiwi", "name": "Kiwi", "price": 1},
            ),
            "42501",
        ),
        "no column grant": (
            lambda: x(
                table_name="inventory",
                operation="update",
                data={"sku": "x"},
                match={"sku": "apple"},
            ),
            "42501",
        ),
        "bad enum": (
            lambda: x(
                table_name="orders", operation="update", data={"status": "lost"}, match={"id": 1}
            ),
            "22P02",
        ),
        "bad money": (
            lambda: x(
                table_name="order_items",
                operation="insert",
                data={"order_id": 1, "line": 5, "sku": "apple", "qty": 1, "unit_price": "1e20"},
            ),
            "22003",
        ),
        "bad timestamptz": (
            lambda: x(
                table_name="events",
                operation="insert",
                data={"id": 1, "at": "yesterday-ish", "kind": "k"},
            ),
            "22007",
        ),
        "no partition": (
            lambda: x(
                table_name="events",
                operation="insert",
                data={"id": 1, "at": "2030-01-01", "kind": "k"},
            ),
            "23514",
        ),
        "deferred fk at request end": (
            lambda: h.request(
                "insert into public.order_items (order_id, line, sku, qty, unit_price) values (1, 9, 'kiwi', 1, 1)"
            ),
            "23503",
        ),
        "duplicate line": (
            lambda: h.request(
                "insert into public.order_items (order_id, line, sku, qty, unit_price)"
                " values (1, 7, 'apple', 1, 1), (1, 7, 'pear', 1, 1)"
            ),
            "23505",
        ),
        # no TRUNCATE grant: PostgreSQL refuses before the guard (0A000) runs
        "truncate": (lambda: h.request("truncate public.order_items"), "42501"),
        "savepoint unknown": (lambda: a.rpc("tx_rollback_to", tx_id=tx, name="nope"), "RZ006"),
        "malformed header": (
            lambda: a.in_tx("not-a-uuid").request("insert into public.orders (id) values (77)"),
            "RZ001",
        ),
        "foreign header": (
            lambda: a.in_tx("00000000-0000-0000-0000-000000000001").request(
                "insert into public.orders (id) values (77)"
            ),
            "RZ001",
        ),
        "timeout too long": (lambda: a.rpc("tx_begin", timeout_ms=10**9), "22023"),
        "label too long": (lambda: a.rpc("tx_begin", label="x" * 1001), "22023"),
    }


def test_each_failure_has_its_sqlstate_and_changes_nothing(user, conn) -> None:
    a = user(ALICE)
    tx = a.rpc("tx_begin")
    a.rpc("tx_execute", tx_id=tx, table_name="orders", operation="insert", data={"id": 1})
    a.rpc(
        "tx_execute",
        tx_id=tx,
        table_name="order_items",
        operation="insert",
        data={"order_id": 1, "line": 1, "sku": "apple", "qty": 1, "unit_price": "0.5"},
    )
    before, status = snapshot(conn), a.rpc("tx_status", tx_id=tx)
    wrong = {}
    for name, (call, expected) in _calls(a, tx).items():
        got = sqlstate(call)
        if got != expected:
            wrong[name] = (got, expected)
        assert snapshot(conn) == before, name
    assert wrong == {}
    after = a.rpc("tx_status", tx_id=tx)
    assert (after["rows"], after["operations"], after["status"]) == (
        status["rows"],
        status["operations"],
        "active",
    )
    assert a.rpc("tx_rollback", tx_id=tx)["success"] is True
    assert conn.execute("select count(*) from public.orders").fetchone()[0] == 0


@pytest.mark.parametrize("ending", ["commit", "rollback", "expired"])
def test_calls_after_the_end(user, conn, ending: str) -> None:
    """After commit or rollback: RZ002; after expiry: RZ003 (or RZ002 once
    reaped); in every case nothing is written."""
    a = user(ALICE)
    tx = a.rpc("tx_begin", timeout_ms=100 if ending == "expired" else 30000)
    a.rpc("tx_execute", tx_id=tx, table_name="orders", operation="insert", data={"id": 1})
    if ending == "commit":
        a.rpc("tx_commit", tx_id=tx)
    elif ending == "rollback":
        a.rpc("tx_rollback", tx_id=tx)
    else:
        time.sleep(0.2)
    before = snapshot(conn)
    expected = {"RZ003"} if ending == "expired" else {"RZ002"}
    assert (
        sqlstate(
            lambda: a.rpc(
                "tx_execute", tx_id=tx, table_name="orders", operation="insert", data={"id": 2}
            )
        )
        in expected
    )
    assert (
        sqlstate(lambda: a.in_tx(tx).request("insert into public.orders (id) values (3)"))
        in expected
    )
    assert sqlstate(lambda: a.rpc("tx_savepoint", tx_id=tx, name="s")) in expected
    assert snapshot(conn) == before
