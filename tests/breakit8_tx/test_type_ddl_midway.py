"""Type DDL between the requests of one logical transaction (a migration
deployed while users have transactions open): enum and composite types
renamed, values and attributes renamed or added, a domain renamed. Writes
before and after it, through header mode and tx_execute, roll back to a
copy taken before the transaction (the copy shares the types, so it sees
the same DDL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create type mood as enum ('sad', 'ok');
create type pair as (x integer, y text);
create domain tags as text[] check (cardinality(value) < 5);
create table t (id integer primary key, m mood, p pair, g tags, r pair[]);
insert into t values
    (1, 'sad', '(1,a)', '{x}', array['(1,b)']::pair[]),
    (2, 'ok', '(2,"b c")', '{}', '{}'),
    (3, null, null, null, null);
grant select, insert, update, delete on t to authenticated;
select resilience.manage_table('t');
create table snapshot as select * from t;
"""
DDL = [
    "alter type mood rename value 'sad' to 'glum'",
    "alter type mood add value 'happy'",
    "alter type mood rename to feeling",
    'alter type pair rename attribute y to "y z"',
    "alter type pair add attribute w numeric",
    "alter domain tags rename to labels",
    "alter type pair rename to couple",
]


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        user = Rest(server, database, sub="typed")
        try:
            yield user, admin
        finally:
            user.close()


def test_type_ddl_between_requests_rolls_back_to_the_copy(app: tuple[Rest, Any]) -> None:
    user, admin = app
    tx = str(user.rpc("tx_begin", 60000))
    user.request("update t set m = 'ok', p = '(9,z)' where id = 1", tx=tx)
    for number, statement in enumerate(DDL):
        admin.execute(statement)
        user.request("update t set p = null, g = '{a,b}' where id = 2", tx=tx)
        user.request(
            "insert into t (id, m, p, r) select %s, m, p, r from t where id = 1",
            (10 + number,),
            tx=tx,
        )
        user.rpc("tx_execute", tx, "t", "update", '{"g": ["q"]}', '{"id": 3}')
        user.request("delete from t where id = %s", (10 + number,), tx=tx)
    user.request("delete from t where id = 1", tx=tx)
    result = user.rpc("tx_rollback", tx)
    assert result["success"] is True, result
    assert table_text(admin, "t") == table_text(admin, "snapshot")
