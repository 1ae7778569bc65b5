"""tx_rollback_to releases exactly the claims taken after the savepoint:
another user meets a row claimed before it, and may write a row claimed
only after it; hostile savepoint names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create table items (id integer primary key, v text);
insert into items select i, 'v' || i from generate_series(1, 4) as i;
grant select, insert, update, delete on items to authenticated;
select resilience.manage_table('items');
"""


@pytest.fixture
def pair(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        alice = Rest(server, database, sub="alice")
        bob = Rest(server, database, sub="bob")
        try:
            yield alice, bob, admin
        finally:
            alice.close()
            bob.close()


def test_rollback_to_releases_only_the_claims_taken_after_it(
    pair: tuple[Rest, Rest, Any],
) -> None:
    alice, bob, admin = pair
    tx = str(alice.rpc("tx_begin", 60000))
    alice.request("update items set v = 'a1' where id = 1", tx=tx)
    alice.rpc("tx_savepoint", tx, "s")
    alice.request("update items set v = 'a1 again' where id = 1", tx=tx)
    alice.request("update items set v = 'a2' where id = 2", tx=tx)
    alice.request("insert into items values (5, 'a5')", tx=tx)
    alice.rpc("tx_savepoint", tx, "s")  # moved: the writes above stay
    alice.request("delete from items where id = 3", tx=tx)
    alice.rpc("tx_rollback_to", tx, "s")
    bob.request("update items set v = 'bob3' where id = 3")
    alice.rpc("tx_rollback_to", tx, "s")  # still there: nothing after it
    with pytest.raises(psycopg.errors.LockNotAvailable):
        bob.request("update items set v = 'bob2' where id = 2")
    # Back before the first savepoint is gone: it was moved.
    with pytest.raises(psycopg.Error) as raised:
        alice.rpc("tx_rollback_to", tx, "nope")
    assert raised.value.sqlstate == "RZ006"
    alice.rpc("tx_savepoint", tx, "t")
    alice.rpc("tx_savepoint", tx, "s")
    alice.request("update items set v = 'a4' where id = 4", tx=tx)
    alice.rpc("tx_rollback_to", tx, "t")  # removes s, taken after t
    with pytest.raises(psycopg.Error) as raised:
        alice.rpc("tx_rollback_to", tx, "s")
    assert raised.value.sqlstate == "RZ006"
    bob.request("update items set v = 'bob4' where id = 4")
    # Alice writes row 4 again: its before-image is now bob's value.
    alice.request("update items set v = 'a4 again' where id = 4", tx=tx)
    with pytest.raises(psycopg.errors.LockNotAvailable):
        bob.request("update items set v = 'bob1' where id = 1")
    assert alice.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "items") == ["(1,v1)", "(2,v2)", "(3,bob3)", "(4,bob4)"]


NAMES = [
    ("ü \"'; drop table items; --", None),
    ("x" * 200, None),
    ("x" * 201, "22023"),
    ("", "22023"),
    (None, "22023"),
]


def test_hostile_savepoint_names(pair: tuple[Rest, Rest, Any]) -> None:
    alice, _, admin = pair
    before = table_text(admin, "items")
    tx = str(alice.rpc("tx_begin", 60000))
    for name, sqlstate in NAMES:
        try:
            alice.rpc("tx_savepoint", tx, name)
        except psycopg.Error as error:
            assert error.sqlstate == sqlstate, (name, str(error))
            continue
        assert sqlstate is None, name
        alice.request("update items set v = 'x' where id = 1", tx=tx)
        alice.rpc("tx_rollback_to", tx, name)
        assert table_text(admin, "items") == before
    assert alice.rpc("tx_commit", tx)["success"] is True
