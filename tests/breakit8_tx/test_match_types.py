"""A match filter is an equality filter, `col = value` as SQL (and PostgREST's
eq) means it, on columns of everyday types: varchar (Django's CharField,
Rails' string), cidr, varchar[] and a varchar primary key are comparable,
and a value is not rounded to the column's modifier before comparing
(numeric(6,2), timestamp(0)) nor checked by its domain: it matches only the
rows that equal it. Oracle: the same filter as a plain WHERE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create domain positive as integer check (value > 0);
create table v (
    id varchar(36) primary key,
    email varchar(100),
    net cidr,
    tags varchar(10)[],
    price numeric(6, 2),
    at timestamp(0),
    code char(3),
    qty positive,
    flags bit(4)
);
grant select, insert, update, delete on v to authenticated;
select resilience.manage_table('v');
"""

ROWS = """
insert into v values
    ('a', 'x@y', '10.0.0.0/8', '{a,b}', 1.00, '2020-01-01 00:00:00', 'ab', 1, B'1010'),
    ('b', 'z@y', '192.168.0.0/16', '{}', 2.50, '2020-01-01 00:00:01', 'xyz', 2, B'0000')
"""
LONG = "abcdefghijklmnopqrstuvwxyz0123456789-too-long-for-varchar-36"

# match -> the plain WHERE that is its oracle
FILTERS = [
    ({"id": "a"}, "id = 'a'"),
    ({"email": "z@y"}, "email = 'z@y'"),
    ({"net": "10.0.0.0/8"}, "net = '10.0.0.0/8'"),
    ({"tags": ["a", "b"]}, "tags = '{a,b}'"),
    ({"price": 1.004}, "price = 1.004"),
    ({"price": 99999}, "price = 99999"),
    ({"price": 2.5}, "price = 2.5"),
    ({"at": "2020-01-01 00:00:00.4"}, "at = '2020-01-01 00:00:00.4'"),
    ({"at": "2020-01-01 00:00:01"}, "at = '2020-01-01 00:00:01'"),
    (
        {"id": "abcdefghijklmnopqrstuvwxyz0123456789-toolong"},
        "id = 'abcdefghijklmnopqrstuvwxyz0123456789-toolong'",
    ),
    ({"code": "ab "}, "code = 'ab '"),
    ({"code": "abcd"}, "code = 'abcd'"),
    ({"qty": -1}, "qty = -1"),
    ({"flags": "1010"}, "flags = B'1010'"),
    ({"flags": "10"}, "flags = B'10'"),
]


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        admin.execute(ROWS)
        user = Rest(server, database, sub="matcher")
        try:
            yield user, admin
        finally:
            user.close()


def test_match_selects_what_the_plain_filter_selects(app: tuple[Rest, Any]) -> None:
    user, admin = app
    before = table_text(admin, "v")
    for match, where in FILTERS:
        expected = sorted(r[0] for r in admin.execute("select id from v where " + where))  # noqa: S608
        tx = str(user.rpc("tx_begin", 60000))
        locked = user.rpc("tx_execute", tx, "v", "lock", None, json.dumps(match))
        assert sorted(r["id"] for r in locked["data"]) == expected, where
        updated = user.rpc("tx_execute", tx, "v", "update", '{"email": "new"}', json.dumps(match))
        assert sorted(r["id"] for r in updated["data"]) == expected, where
        assert user.rpc("tx_rollback", tx)["success"] is True
        batch = user.request(
            "select resilience.tx_run(%s)",
            (json.dumps([{"table": "v", "operation": "delete", "match": match}]),),
        )[0][0]
        assert sorted(r["id"] for r in batch["results"][0]["data"]) == expected, where
        admin.execute("delete from v")
        admin.execute(ROWS)
        assert table_text(admin, "v") == before


def test_a_varchar_key_is_locked_by_key_and_claimed_in_header_mode(
    app: tuple[Rest, Any], server: Server, database: str
) -> None:
    user, admin = app
    assert admin.execute(
        "select descriptor ? 'lock_by_key' from resilience.managed_tables"
    ).fetchone() == (True,)
    before = table_text(admin, "v")
    tx = str(user.rpc("tx_begin", 60000))
    assert user.rpc("tx_execute", tx, "v", "lock", None, '{"id": "a"}')["count"] == 1
    user.request("update v set id = 'c' where id = 'b'", tx=tx)
    other = Rest(server, database, sub="other")
    try:
        for statement in (
            "update v set email = '' where id = 'a'",
            "insert into v (id) values ('b')",
        ):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.request(statement)
    finally:
        other.close()
    assert user.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "v") == before
