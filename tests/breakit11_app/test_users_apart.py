"""Isolation between signed-in users (DESIGN.md section 1, docs/batch_and_security.md
"Security model"): one user's transaction, claims, expiry or failure never
blocks, leaks to, or alters another user's calls or data; rows RLS hides
never appear in another user's results, errors, status or audit."""

from __future__ import annotations

import json
import time

import psycopg

from .app import ALICE, BOB, CAROL, snapshot, sqlstate


def _audit_text(rest) -> str:
    rows = rest.request("select to_jsonb(a)::text from resilience.audit_log as a order by id")
    mine = rest.request("select to_jsonb(a)::text from public.audit as a order by id")
    return json.dumps([r[0] for r in rows + mine])


def test_bobs_transaction_is_invisible_and_untouchable_for_alice(user, conn) -> None:
    """Alice cannot see, execute in, savepoint, commit or roll back Bob's
    transaction (RZ001), sees none of his audit rows, and his data stays."""
    alice, bob = user(ALICE), user(BOB)
    tx = bob.rpc("tx_begin", label="bob-secret-label")
    bob.rpc(
        "tx_execute",
        tx_id=tx,
        table_name="orders",
        operation="insert",
        data={"id": 42, "note": "bob-private-note"},
    )
    for call in (
        lambda: alice.rpc("tx_status", tx_id=tx),
        lambda: alice.rpc(
            "tx_execute", tx_id=tx, table_name="orders", operation="insert", data={"id": 43}
        ),
        lambda: alice.rpc("tx_savepoint", tx_id=tx, name="x"),
        lambda: alice.rpc("tx_commit", tx_id=tx),
        lambda: alice.rpc("tx_rollback", tx_id=tx),
        lambda: alice.in_tx(tx).request("insert into public.orders (id) values (44)"),
    ):
        assert sqlstate(call) == "RZ001"
    assert alice.request("select public.tx_active()") == []
    leaked = _audit_text(alice)
    assert tx not in leaked and "bob-private" not in leaked and "bob-secret" not in leaked
    assert alice.request("select count(*) from public.orders")[0][0] == 0
    assert bob.rpc("tx_commit", tx_id=tx)["success"] is True
    assert (
        conn.execute("select note from public.orders where id = 42").fetchone()[0]
        == "bob-private-note"
    )


def test_a_claim_conflict_names_no_hidden_row(user, conn) -> None:
    """Bob's claim on a shared stock row stops Alice's write at once (55P03)
    without naming the row's values or Bob's order; Alice's own transaction
    stays usable and its rollback is exact."""
    alice, bob = user(ALICE), user(BOB)
    before = snapshot(conn)
    btx = bob.rpc("tx_begin")
    bob.rpc(
        "tx_execute",
        tx_id=btx,
        table_name="orders",
        operation="insert",
        data={"id": 9, "note": "bob-hidden"},
    )
    bob.rpc(
        "tx_execute",
        tx_id=btx,
        table_name="inventory",
        operation="update",
        data={"on_hand": 7},
        match={"sku": "apple"},
    )
    atx = alice.rpc("tx_begin")
    alice.rpc("tx_execute", tx_id=atx, table_name="orders", operation="insert", data={"id": 10})
    try:
        alice.in_tx(atx).request(
            "update public.inventory set on_hand = on_hand - 1 where sku = 'APPLE'"
        )
    except psycopg.Error as error:
        assert error.sqlstate == "55P03"
        text = " ".join(
            str(x)
            for x in (
                error.diag.message_primary,
                error.diag.message_detail,
                error.diag.message_hint,
            )
        )
        assert "bob-hidden" not in text and "apple" not in text.lower() and "7" not in text.split()
    else:
        raise AssertionError("Bob's claim did not stop Alice")
    # Alice's transaction goes on; her rollback is hers alone
    status = alice.rpc("tx_status", tx_id=atx)
    assert status["status"] == "active" and status["rows"] == 2  # the order and its audit row
    assert "bob" not in json.dumps(status)
    assert alice.rpc("tx_rollback", tx_id=atx)["success"] is True
    assert bob.rpc("tx_rollback", tx_id=btx)["success"] is True
    assert snapshot(conn) == before


def test_bobs_expired_claim_never_blocks_alice(user, conn) -> None:
    """Bob's transaction expires holding a stock row: Alice's next tx_begin
    reaps it, her write of the row goes through, Bob's rows are restored,
    and the timeout's audit rows are Bob's, not Alice's."""
    alice, bob = user(ALICE), user(BOB)
    btx = bob.rpc("tx_begin", timeout_ms=100)
    bob.rpc("tx_execute", tx_id=btx, table_name="orders", operation="insert", data={"id": 5})
    bob.in_tx(btx).request("update public.inventory set on_hand = 0 where sku = 'mug-1'")
    time.sleep(0.25)
    atx = alice.rpc("tx_begin")
    result = alice.rpc(
        "tx_execute",
        tx_id=atx,
        table_name="inventory",
        operation="update",
        data={"on_hand": 1},
        match={"sku": "MUG-1"},
    )
    assert result["count"] == 1
    assert bob.rpc("tx_status", tx_id=btx)["status"] == "timed_out"
    assert conn.execute("select count(*) from public.orders").fetchone()[0] == 0
    assert btx not in _audit_text(alice)
    assert "timeout" in json.dumps(
        bob.request("select event from resilience.audit_log where tx_id = %s", (btx,))
    )
    alice.rpc("tx_commit", tx_id=atx)
    assert (
        conn.execute("select on_hand from public.inventory where sku = 'mug-1'").fetchone()[0] == 1
    )


def test_a_failing_call_of_one_user_leaves_the_others_alone(user, conn) -> None:
    """Carol's failed calls (a check violation, a deferred FK failing at the
    request's end, a bad enum) change nothing of hers, Alice's or Bob's."""
    alice, bob, carol = user(ALICE), user(BOB), user(CAROL)
    atx, btx, ctx = (u.rpc("tx_begin") for u in (alice, bob, carol))
    alice.rpc("tx_execute", tx_id=atx, table_name="orders", operation="insert", data={"id": 1})
    bob.rpc("tx_execute", tx_id=btx, table_name="orders", operation="insert", data={"id": 2})
    carol.rpc("tx_execute", tx_id=ctx, table_name="orders", operation="insert", data={"id": 3})
    mid = snapshot(conn)
    items = [
        {"order_id": 3, "line": 1, "sku": "apple", "qty": 1, "unit_price": "1"},
        {"order_id": 3, "line": 2, "sku": "kiwi", "qty": 1, "unit_price": "1"},
    ]
    assert (
        sqlstate(
            lambda: carol.rpc(
                "tx_execute", tx_id=ctx, table_name="order_items", operation="insert", data=items
            )
        )
        == "23503"
    )
    assert (
        sqlstate(
            lambda: carol.in_tx(ctx).request(
                "insert into public.order_items (order_id, line, sku, qty, unit_price)"
                " values (3, 1, 'apple', 1, 1), (3, 2, 'kiwi', 1, 1)"
            )
        )
        == "23503"
    )
    assert (
        sqlstate(
            lambda: carol.rpc(
                "tx_execute",
                tx_id=ctx,
                table_name="order_items",
                operation="insert",
                data=[items[0], {**items[0], "line": 3, "qty": 0}],
            )
        )
        == "23514"
    )
    assert (
        sqlstate(
            lambda: carol.rpc(
                "tx_execute",
                tx_id=ctx,
                table_name="orders",
                operation="update",
                data={"status": "lost"},
                match={"id": 3},
            )
        )
        == "22P02"
    )
    # Carol writing Alice's order (RLS): nothing matched, nothing changed
    assert (
        carol.rpc(
            "tx_execute",
            tx_id=ctx,
            table_name="orders",
            operation="update",
            data={"note": "carol"},
            match={"id": 1},
        )["count"]
        == 0
    )
    assert (
        sqlstate(
            lambda: carol.rpc(
                "tx_execute",
                tx_id=ctx,
                table_name="orders",
                operation="insert",
                data={"id": 4, "user_id": ALICE},
            )
        )
        == "42501"
    )
    assert snapshot(conn) == mid
    assert carol.rpc("tx_status", tx_id=ctx)["rows"] == 2  # the order and its audit row
    for u, tx in ((alice, atx), (bob, btx), (carol, ctx)):
        assert u.rpc("tx_commit", tx_id=tx)["success"] is True
    assert conn.execute("select array_agg(id order by id) from public.orders").fetchone()[0] == [
        1,
        2,
        3,
    ]
