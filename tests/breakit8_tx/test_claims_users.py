"""Claims across users as PostgREST runs them: the same role with another
JWT subject, `anon`, plain writes and upserts on a claimed row, an expired
holder, a real row lock held elsewhere, and malformed x-resilience-tx
headers. Every request carries statement_timeout: a call that waited would
fail with 57014 instead of the SQLSTATE the test expects."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create table items (id integer primary key, v text, n integer not null default 0);
insert into items select i, 'v' || i, i from generate_series(1, 4) as i;
grant select, insert, update, delete on items to authenticated, anon;
select resilience.manage_table('items');
"""


@pytest.fixture
def users(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Rest, Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        alice = Rest(server, database, sub="alice")
        bob = Rest(server, database, sub="bob")
        anon = Rest(server, database, sub=None, role="anon")
        for user in (alice, bob, anon):
            # A call that waits on anything fails instead of hanging the test.
            user.conn.execute("set statement_timeout = '20s'")
        try:
            yield alice, bob, anon, admin
        finally:
            for user in (alice, bob, anon):
                user.close()


def _sqlstate(call: Any, *args: Any, **kwargs: Any) -> tuple[str | None, str]:
    try:
        call(*args, **kwargs)
    except psycopg.Error as error:
        return error.sqlstate, str(error)
    return None, ""


def test_another_subject_of_the_same_role_meets_the_claim_at_once(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    alice, bob, anon, admin = users
    before = table_text(admin, "items")
    tx = str(alice.rpc("tx_begin", 60000))
    alice.request("update items set v = 'alice', n = n + 10 where id = 1", tx=tx)
    alice.request(
        "insert into items (id, v) values (1, 'x') on conflict (id) do update set n = 0", tx=tx
    )
    expires = str(alice.rpc("tx_status", tx)["expires_at"])[:19].replace("T", " ")

    writes = [
        "update items set v = 'bob' where id = 1",
        "delete from items where id = 1",
        "insert into items (id, v) values (1, 'bob') on conflict (id) do update set v = 'bob'",
        "update items set id = 9 where id = 1",
        "update items set n = n + 1",  # many rows, one claimed
    ]
    for writer in (bob, anon):
        for statement in writes:
            state, message = _sqlstate(writer.request, statement)
            assert state == "55P03", (statement, message)
            assert tx in message and expires in message, message
        # Alice's header is no key to her transaction for anyone else (and
        # says nothing of it: not found).
        state, message = _sqlstate(writer.request, "update items set v = 'bob' where id = 2", tx=tx)
        assert state == "RZ001", message
        state, _ = _sqlstate(writer.rpc, "tx_rollback", tx)
        assert state == ("RZ001" if writer is bob else "42501")  # anon may call nothing
    # A write that writes nothing on the claimed row is no conflict.
    bob.request("insert into items (id, v) values (1, 'bob') on conflict do nothing")
    bob.request("update items set v = 'bob' where id = 1 and false")
    # Bob's own logical transaction meets the claim too, through tx_execute
    # and through his own header.
    bob_tx = str(bob.rpc("tx_begin", 60000))
    state, _ = _sqlstate(
        bob.rpc, "tx_execute", bob_tx, "items", "update", '{"v": "b"}', '{"id": 1}'
    )
    assert state == "55P03"
    state, _ = _sqlstate(bob.request, "delete from items where id = 1", tx=bob_tx)
    assert state == "55P03"
    bob.request("update items set v = 'bob' where id = 2", tx=bob_tx)
    bob.request("update items set v = 'plain' where id = 3")

    assert alice.rpc("tx_rollback", tx)["success"] is True
    assert bob.rpc("tx_rollback", bob_tx)["success"] is True
    after = table_text(admin, "items")
    assert after == [r.replace("(3,v3,", "(3,plain,") for r in before]


def test_an_expired_holder_is_rolled_back_before_the_next_writer(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    alice, bob, _, admin = users
    tx = str(alice.rpc("tx_begin", 100))
    alice.request("update items set v = 'alice', n = 100 where id = 1", tx=tx)
    time.sleep(0.3)
    bob_tx = str(bob.rpc("tx_begin", 60000))
    # tx_begin reaped it already; so would tx_execute and tx_pre_request.
    assert admin.execute(
        "select status from resilience.transactions where id = %s", (tx,)
    ).fetchone() == ("timed_out",)
    bob.request("update items set v = 'bob' where id = 1", tx=bob_tx)
    assert bob.rpc("tx_commit", bob_tx)["success"] is True
    assert admin.execute("select v, n from items where id = 1").fetchone() == ("bob", 1)


def test_a_header_write_after_pre_request_resolves_an_expired_holder(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    alice, bob, _, admin = users
    bob_tx = str(bob.rpc("tx_begin", 60000))
    tx = str(alice.rpc("tx_begin", 100))
    alice.request("update items set v = 'alice', n = 100 where id = 1", tx=tx)
    time.sleep(0.3)
    bob.request("update items set v = 'bob' where id = 1", tx=bob_tx, pre_request=True)
    bob.request("update items set v = 'plain' where id = 2", pre_request=True)
    assert bob.rpc("tx_rollback", bob_tx)["success"] is True
    assert admin.execute("select v, n from items where id = 1").fetchone() == ("v1", 1)


def test_a_real_row_lock_on_an_expired_holders_row_makes_nobody_wait(
    users: tuple[Rest, Rest, Rest, Any], dsn: str
) -> None:
    """The undo of the expired transaction needs a row somebody holds FOR
    UPDATE: every lazy reap gives up at once, and other calls go on."""
    alice, bob, _, admin = users
    tx = str(alice.rpc("tx_begin", 100))
    alice.request("update items set v = 'alice' where id = 1", tx=tx)
    time.sleep(0.3)
    with psycopg.connect(dsn) as holder:
        holder.execute("select * from items where id = 1 for update")
        for user in (alice, bob):
            user.conn.execute("set statement_timeout = '3s'")
        bob_tx = str(bob.rpc("tx_begin", 60000))
        bob.request("update items set v = 'bob' where id = 2", tx=bob_tx)
        bob.rpc("tx_execute", bob_tx, "items", "update", '{"v": "b3"}', '{"id": 3}')
        bob.request("update items set v = 'plain' where id = 4", pre_request=True)
        assert bob.rpc("tx_rollback", bob_tx)["success"] is True
        status = admin.execute(
            "select status from resilience.transactions where id = %s", (tx,)
        ).fetchone()
        assert status == ("active",)  # expired, left for a later reap
        holder.rollback()
    assert admin.execute("select resilience.tx_reap()").fetchone() == (1,)
    assert table_text(admin, "items")[:3] == ["(1,v1,1)", "(2,v2,2)", "(3,v3,3)"]


MALFORMED = [
    ("not-a-uuid", "RZ001"),
    ("00000000-0000-0000-0000-00000000000g", "RZ001"),
    (" 00000000-0000-0000-0000-000000000000", "RZ001"),
    ("00000000-0000-0000-0000-000000000000", "RZ001"),  # no such transaction
    ("'; drop table items; --", "RZ001"),
]


def test_a_malformed_header_value_fails_clearly_and_writes_nothing(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    alice, _, _, admin = users
    before = table_text(admin, "items")
    for value, sqlstate in MALFORMED:
        state, _ = _sqlstate(alice.request, "update items set v = 'x' where id = 1", tx=value)
        assert state == sqlstate, value
    # A JSON array or object where the id should be is no id either.
    tx = str(alice.rpc("tx_begin", 60000))
    for wrong in ([tx], {"id": tx}, 1):
        headers = json.dumps({"x-resilience-tx": wrong})
        state, _ = _sqlstate(
            alice.request, "update items set v = 'x' where id = 1", headers=headers
        )
        assert state == "RZ001", wrong
    assert alice.rpc("tx_status", tx)["status"] == "active"
    assert table_text(admin, "items") == before


NO_ID = [
    json.dumps({"x-resilience-tx": ""}),
    json.dumps({"x-resilience-tx": None}),
    json.dumps(["x-resilience-tx"]),
    json.dumps({"other": "x-resilience-tx"}),
    "",
]


def test_a_header_without_a_transaction_id_is_a_plain_write(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    """No transaction named: the write is plain, so it is not captured and a
    claimed row stays off limits."""
    alice, bob, _, admin = users
    for headers in NO_ID:
        tx = str(alice.rpc("tx_begin", 60000))
        alice.request("update items set v = 'claimed' where id = 1", tx=tx)
        bob.request("update items set v = %s where id = 2", (headers,), headers=headers)
        state, _ = _sqlstate(
            bob.request, "update items set v = 'plain' where id = 1", headers=headers
        )
        assert state == "55P03", headers
        assert alice.rpc("tx_rollback", tx)["success"] is True
        assert admin.execute("select v from items where id in (1, 2) order by id").fetchall() == [
            ("v1",),
            (headers,),
        ]


def test_an_upper_case_uuid_names_the_same_transaction(
    users: tuple[Rest, Rest, Rest, Any],
) -> None:
    alice, _, _, admin = users
    before = table_text(admin, "items")
    tx = str(alice.rpc("tx_begin", 60000))
    alice.request("update items set v = 'x' where id = 1", tx=tx.upper())
    alice.request("delete from items where id = 2", tx=tx.replace("-", ""))
    assert alice.rpc("tx_rollback", tx)["restored_rows"] == 2
    assert table_text(admin, "items") == before
