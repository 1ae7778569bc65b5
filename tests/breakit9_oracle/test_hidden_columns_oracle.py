"""A user who may see only some columns and only their own rows (column
grants, row level security), writing through PostgREST: the rollback must
still restore every column and every cascaded row it could never read, as
a real ROLLBACK would (compared as `row::text` by a superuser)."""

from __future__ import annotations

from typing import Any

import psycopg
from breakit8_tx.rest import Rest
from conftest import Server

SCHEMA = r"""
create table secret (
    id int primary key,
    owner text not null default (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
    v text,
    hidden text default 'set by default',
    score int generated always as (length(hidden)) stored,
    serial_no bigint generated always as identity
);
alter table secret enable row level security;
create policy mine on secret
    using (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
grant select (id, v), insert (id, v), update (v), delete on secret to authenticated;
create table secret_kid (id int primary key, sid int references secret on delete cascade, x bytea);
alter table secret_kid enable row level security;
insert into secret (id, owner, v, hidden) values
    (1, 'alice', 'a1', E'tab\there'), (2, 'alice', 'a2', null), (3, 'bob', 'b3', 'bob''s');
insert into secret_kid values (1, 1, '\x00ff'), (2, 1, '\x'), (3, 3, null);
select resilience.manage_table('secret');
select resilience.manage_table('secret_kid');
"""


def everything(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select 's' || s::text from secret s union all select 'k' || k::text from secret_kid k"
            " order by 1"
        )
    ]


def test_rollback_restores_columns_and_cascaded_rows_the_writer_could_not_read(
    server: Server, database: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(SCHEMA)
    before = everything(conn)
    alice = Rest(server, database, sub="alice")
    try:
        tx = str(alice.rpc("tx_begin", 60000))
        alice.rpc("tx_execute", tx, "secret", "update", '{"v": "A1"}', '{"id": 1}')
        alice.request("delete from secret where id = 1", tx=tx)  # cascades to kids 1, 2
        alice.request("insert into secret (id, v) values (4, 'new')", tx=tx)
        alice.rpc("tx_execute", tx, "secret", "delete", None, '{"id": 2}')
        # Bob's row is invisible to her: nothing to write, nothing to restore.
        alice.request("update secret set v = 'x' where id = 3", tx=tx)
        assert everything(conn) != before
        assert alice.rpc("tx_rollback", tx)["success"] is True
    finally:
        alice.close()
    assert everything(conn) == before
