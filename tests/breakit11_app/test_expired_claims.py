# ruff: noqa: E501  (SQL reads best on one line)
"""An expired transaction's claim never blocks another user for long: a
`tx_execute` reaps it lazily, and so does PostgREST's db-pre-request hook
(`resilience.tx_pre_request`) before a header-mode request's statement
(docs/transactions.md, "Known limitations": a plain write, header mode
included, meets the expired claim (55P03) until the next reap unless the
hook ran first in its request)."""

from __future__ import annotations

import json
import time

from .app import ALICE, BOB, sqlstate


def _header_request_with_hook(rest, tx: str, statement: str) -> None:  # type: ignore[no-untyped-def]
    """A request as PostgREST runs it when db-pre-request is set: the hook,
    then the statement, in one database transaction."""
    with rest.conn.transaction():
        rest.conn.execute("set local role authenticated")
        rest.conn.execute(
            "select set_config('request.jwt.claims', %s, true), set_config('request.headers', %s, true)",
            (
                json.dumps({"sub": rest.sub, "role": "authenticated"}),
                json.dumps({"x-resilience-tx": tx}),
            ),
        )
        rest.conn.execute("select resilience.tx_pre_request()")
        rest.conn.execute(statement)


def test_expired_claim_meets_header_mode(user, conn) -> None:
    alice, bob = user(ALICE), user(BOB)
    atx = alice.rpc("tx_begin", timeout_ms=100)
    alice.rpc(
        "tx_execute",
        tx_id=atx,
        table_name="inventory",
        operation="update",
        data={"on_hand": 3},
        match={"sku": "pear"},
    )
    btx = bob.rpc("tx_begin")
    time.sleep(0.25)
    update = "update public.inventory set on_hand = 4 where sku = 'pear'"
    # without the hook: the documented 55P03 until the next reap
    assert sqlstate(lambda: bob.in_tx(btx).request(update)) == "55P03"
    _header_request_with_hook(bob, btx, update)
    assert alice.rpc("tx_status", tx_id=atx)["status"] == "timed_out"
    assert bob.rpc("tx_rollback", tx_id=btx)["success"] is True
    assert (
        conn.execute("select on_hand from public.inventory where sku = 'pear'").fetchone()[0] == 5
    )
