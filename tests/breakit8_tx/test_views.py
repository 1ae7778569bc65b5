"""PostgREST apps write through views as often as through tables: an
auto-updatable view and a view with an INSTEAD OF trigger over a managed
table, written in header mode, are captured and claim-checked like the
table (the base table's statement triggers fire), and roll back exactly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create table items (id integer primary key, v text, hidden text default 'h');
insert into items select i, 'v' || i from generate_series(1, 4) as i;
create view items_view as select id, v from items where id < 100;
create view items_instead as select id, v from items;
create function items_instead_write() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into public.items (id, v) values (new.id, new.v);
        return new;
    elsif tg_op = 'UPDATE' then
        update public.items set id = new.id, v = new.v where id = old.id;
        return new;
    end if;
    delete from public.items where id = old.id;
    return old;
end;
$$;
create trigger items_instead_write instead of insert or update or delete on items_instead
    for each row execute function items_instead_write();
grant select, insert, update, delete on items, items_view, items_instead to authenticated;
select resilience.manage_table('items');
"""


POSTGREST = [
    (
        'WITH pgrst_source AS (INSERT INTO TARGET("id", "v") SELECT pgrst_body."id",'
        ' pgrst_body."v" FROM (SELECT %s::json AS json_data) pgrst_payload,'
        " LATERAL (SELECT CASE WHEN json_typeof(pgrst_payload.json_data) = 'array'"
        " THEN pgrst_payload.json_data ELSE json_build_array(pgrst_payload.json_data) END AS val)"
        " pgrst_uniform_json, LATERAL (SELECT * FROM json_populate_recordset(null::TARGET,"
        " pgrst_uniform_json.val) AS _) AS pgrst_body RETURNING TARGET.*)"
        " SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total,"
        " coalesce(json_agg(_postgrest_t), '[]') AS body"
        " FROM (SELECT * FROM pgrst_source) _postgrest_t",
        '[{"id": 50, "v": "p"}, {"id": 51, "v": "q"}]',
    ),
    (
        'WITH pgrst_source AS (UPDATE TARGET SET "v" = pgrst_body."v" FROM'
        ' (SELECT %s::json AS json_data) pgrst_payload, LATERAL (SELECT "v" FROM'
        " json_populate_record(null::TARGET, pgrst_payload.json_data) AS _) AS pgrst_body"
        " WHERE TARGET.\"id\" = ANY('{1,50,60}'::integer[]) RETURNING 1)"
        " SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total"
        " FROM (SELECT * FROM pgrst_source) _postgrest_t",
        '{"v": "patched"}',
    ),
    (
        'WITH pgrst_source AS (DELETE FROM TARGET WHERE TARGET."id" = ANY(%s::integer[])'
        " RETURNING 1) SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t)"
        " FROM (SELECT * FROM pgrst_source) _postgrest_t",
        "{51,2}",
    ),
]


@pytest.fixture
def views(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        alice = Rest(server, database, sub="alice")
        bob = Rest(server, database, sub="bob")
        try:
            yield alice, bob, admin
        finally:
            alice.close()
            bob.close()


def test_writes_through_a_view_are_captured_and_claimed(views: tuple[Rest, Rest, Any]) -> None:
    alice, bob, admin = views
    for view in ("items_view", "items_instead"):
        _through(alice, bob, admin, view)
    # The statements PostgREST itself sends for POST, PATCH and DELETE (a
    # writable CTE over json_populate_recordset), on the view and the table.
    before = table_text(admin, "items")
    tx = str(alice.rpc("tx_begin", 60000))
    for target, shift in (('"public"."items_view"', "5"), ('"public"."items"', "6")):
        for statement, body in POSTGREST:
            alice.request(statement.replace("TARGET", target), (body.replace("5", shift),), tx=tx)
    with pytest.raises(psycopg.errors.LockNotAvailable):
        bob.request("update items set v = 'b' where id = 1")
    assert alice.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "items") == before


def _through(alice: Rest, bob: Rest, admin: Any, view: str) -> None:
    before = table_text(admin, "items")
    tx = str(alice.rpc("tx_begin", 60000))
    for statement in (
        "update " + view + " set v = 'a' where id = 1",
        "delete from " + view + " where id = 2",
        "insert into " + view + " (id, v) values (5, 'new')",
        "update " + view + " set id = 6 where id = 3",
    ):
        alice.request(statement, tx=tx)
    for statement in (
        "update " + view + " set v = 'b' where id = 1",
        "insert into " + view + " (id, v) values (2, 'back')",
        "update items set v = 'b' where id = 5",
    ):
        with pytest.raises(psycopg.errors.LockNotAvailable):
            bob.request(statement)
    assert alice.rpc("tx_status", tx)["status"] == "active"
    assert alice.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "items") == before
