"""Three signed-in users at once, interleaved call by call: claims keep
their logical transactions apart, so the shop ends as if only the committed
ones had ever run. Oracle: the committed users' successful operations,
replayed in the same order as plain requests on a twin database, give the
same rows (clock columns and the audit's identity aside), each with the same
row count; and nothing of the rolled-back ones is left (their audit rows
included)."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .app import ALICE, BOB, CAROL, Rest
from .shop_ops import OPS, Op, claims, logical, masked

USERS = (ALICE, BOB, CAROL)

PLAN = st.tuples(
    st.lists(st.tuples(st.integers(0, 2), OPS, st.booleans()), min_size=1, max_size=18),
    st.tuples(st.booleans(), st.booleans(), st.booleans()),  # commit (True) or roll back, per user
)


def _replay(conn: psycopg.Connection[Any], sub: str, op: Op) -> int:
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims(sub),))
        return conn.execute(op.sql, op.params).rowcount


def _reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "select resilience.tx_rollback(id, force => true) from resilience.transactions"
            " where status = 'active'"
        )
        admin.execute("truncate public.orders, public.order_items, public.audit, public.events")
        admin.execute(
            "update public.inventory as i set on_hand = v.n from (values ('apple', 10),"
            " ('pear', 5), ('mug-1', 2)) as v (s, n) where i.sku = v.s::public.citext"
        )


@seed(11)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=PLAN)
def test_interleaved_users_end_as_their_committed_work(
    shop: str, oracle_shop: str, plan: Any
) -> None:
    steps, outcome = plan
    conns = [psycopg.connect(shop, user="authenticator", autocommit=True) for _ in USERS]
    try:
        with (
            psycopg.connect(shop, autocommit=True) as admin,
            psycopg.connect(oracle_shop, user="authenticator", autocommit=True) as oracle,
        ):
            for dsn in (shop, oracle_shop):
                _reset(dsn)  # each example starts from the seed data
            rests = [Rest(c, sub) for c, sub in zip(conns, USERS, strict=True)]
            txs = [r.rpc("tx_begin", timeout_ms=60000) for r in rests]
            done: list[tuple[int, Op, int | None]] = []
            for who, op, via_header in steps:
                state, count = logical(rests[who], txs[who], op, via_header)
                if state is None:
                    done.append((who, op, count))
                else:
                    # a failure is a documented SQLSTATE, never a crash of generated SQL
                    assert state in {
                        "55P03",
                        "23505",
                        "23503",
                        "23514",
                        "22P02",
                        "22P05",
                        "42501",
                    }, (state, op)
            for who, rest in enumerate(rests):
                if outcome[who]:
                    assert rest.rpc("tx_commit", tx_id=txs[who])["success"] is True
                else:
                    assert rest.rpc("tx_rollback", tx_id=txs[who])["success"] is True
            for who, op, count in done:
                if outcome[who]:
                    assert _replay(oracle, USERS[who], op) == count, op
            with psycopg.connect(oracle_shop, autocommit=True) as oracle_admin:
                assert masked(admin) == masked(oracle_admin)
            claimed = admin.execute("select count(*) from resilience._claims()").fetchone()
            assert claimed is not None and claimed[0] == 0
    finally:
        for c in conns:
            c.close()
