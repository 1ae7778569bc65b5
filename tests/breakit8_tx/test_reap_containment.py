"""No call of one user fails because of another user's transaction: an
expired transaction whose undo cannot be applied (a constraint added since,
a user trigger raising during the restore) is contained by the lazy reap of
bob's PostgREST requests (tx_begin, tx_execute, tx_pre_request + a plain or
header write), becomes `failed`, and releases its claims."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest

SCHEMA = """
create table items (id integer primary key, v text);
insert into items select i, 'v' || i from generate_series(1, 4) as i;
grant select, insert, update, delete on items to authenticated;
select resilience.manage_table('items');
create function refuse_restore() returns trigger language plpgsql as $$
begin
    if current_setting('resilience.restoring', true) <> '' then
        raise exception 'restores refused' using errcode = 'P0001';
    end if;
    return new;
end;
$$;
"""
BREAKERS = {
    "check": "alter table items add constraint no_v1 check (v <> 'v1') not valid",
    "trigger": "create trigger refuse before update on items for each row"
    " execute function refuse_restore()",
}


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        alice = Rest(server, database, sub="alice")
        bob = Rest(server, database, sub="bob")
        try:
            yield alice, bob, admin
        finally:
            alice.close()
            bob.close()


MENDERS = {
    "check": "alter table items drop constraint no_v1",
    "trigger": "drop trigger refuse on items",
}
CALLS = ["tx_begin", "pre_request_plain", "pre_request_header"]


def test_an_unrestorable_expired_transaction_is_contained(app: tuple[Rest, Rest, Any]) -> None:
    alice, bob, admin = app
    for breaker in sorted(BREAKERS):
        for call in CALLS:
            _contained(alice, bob, admin, breaker, call)
            admin.execute(MENDERS[breaker])
            admin.execute("update items set v = 'v1' where id = 1")


def _contained(alice: Rest, bob: Rest, admin: Any, breaker: str, call: str) -> None:
    bob_tx = str(bob.rpc("tx_begin", 60000))
    tx = str(alice.rpc("tx_begin", 100))
    alice.request("update items set v = 'alice' where id = 1", tx=tx)
    admin.execute(BREAKERS[breaker])
    time.sleep(0.3)
    if call == "tx_begin":
        bob.rpc("tx_begin", 60000)
        bob.request("update items set v = 'bob' where id = 1")
    elif call == "pre_request_plain":
        bob.request("update items set v = 'bob' where id = 1", pre_request=True)
    else:
        bob.request("update items set v = 'bob' where id = 1", tx=bob_tx, pre_request=True)
    status = admin.execute(
        "select status from resilience.transactions where id = %s", (tx,)
    ).fetchone()
    assert status == ("failed",), (breaker, call, status)
    assert admin.execute("select v from items where id = 1").fetchone() == ("bob",)
    assert bob.rpc("tx_commit", bob_tx)["success"] is True
