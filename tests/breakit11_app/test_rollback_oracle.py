"""All or nothing, against the oracle of a real database transaction.

docs/transactions.md ("Rollback", "Exactness"): a rollback restores the very
values, with FK cascades, partitions, generated and identity columns; user
triggers fire during a restore and skip it when they read
`resilience.restoring` (the shop's `updated_at` and audit triggers do, as
the docs advise). So the promise checked, for a signed-in user's sequence of
shop operations (half of them as PostgREST requests with the header, half as
tx_execute rpcs), with savepoints:
* each operation succeeds or fails with the SQLSTATE and row count of the
  same statement in a real transaction (deferred constraints checked at the
  request's end), and leaves the same rows (clock columns aside);
* tx_rollback_to leaves the rows of a real ROLLBACK TO SAVEPOINT, and
  exactly (clock columns included) the rows the savepoint saw;
* tx_rollback leaves exactly (row::text of every table, the audit table
  written by the triggers included) what the real ROLLBACK leaves.
"""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .app import ALICE, Rest, snapshot
from .shop_ops import OPS, RealTransaction, logical, masked

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("op"), OPS, st.booleans()),
        st.tuples(st.just("savepoint"), st.none(), st.none()),
        st.tuples(st.just("rollback_to"), st.integers(0, 5), st.none()),
    ),
    min_size=1,
    max_size=14,
)


@seed(20261202)
@settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False
)
@given(steps=STEPS)
def test_rollback_equals_real_rollback(shop: str, oracle_shop: str, steps: list[Any]) -> None:
    with (
        psycopg.connect(shop, autocommit=True) as admin,
        psycopg.connect(oracle_shop) as oracle_conn,
        psycopg.connect(shop, user="authenticator", autocommit=True) as rest,
    ):
        before = snapshot(admin)
        real = RealTransaction(oracle_conn, ALICE)
        alice = Rest(rest, ALICE)
        tx = alice.rpc("tx_begin", timeout_ms=60000, label="checkout")
        savepoints: list[tuple[str, dict[str, list[str]]]] = []
        try:
            for i, (kind, op, via_header) in enumerate(steps):
                if kind == "op":
                    expected = real.run(op)
                    got = logical(alice, tx, op, via_header)
                    assert got == expected, (i, op, via_header)
                elif kind == "savepoint":
                    name = f"sp{i}"
                    real.savepoint(name)
                    alice.rpc("tx_savepoint", tx_id=tx, name=name)
                    savepoints.append((name, snapshot(admin)))
                else:
                    if not savepoints:
                        continue
                    name, seen = savepoints[op % len(savepoints)]
                    del savepoints[op % len(savepoints) + 1 :]
                    real.rollback_to(name)
                    alice.rpc("tx_rollback_to", tx_id=tx, name=name)
                    assert snapshot(admin) == seen, (i, name)
                assert masked(admin) == real.masked(), (i, kind, op)
            real.rollback()
            result = alice.rpc("tx_rollback", tx_id=tx)
            assert result["success"] is True, result
            assert snapshot(admin) == before
        finally:
            if oracle_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                oracle_conn.rollback()
            # the next example starts from the seed data again
            admin.execute(
                "select resilience.tx_rollback(id, force => true) from resilience.transactions"
                " where status = 'active'"
            )
