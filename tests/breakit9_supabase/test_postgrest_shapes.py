"""The statements PostgREST itself builds (bulk insert from a json body,
upsert with merge-duplicates, PATCH and DELETE with filters, in CTEs), sent
with `x-resilience-tx`: all captured, and tx_rollback leaves the tables as a
real ROLLBACK of the same requests would (`row::text`)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from .supa import ALICE, BOB, Rest, table_rows

# Shapes as PostgREST 12 sends them (one statement per request, $1 the body).
BULK_INSERT = """
with pgrst_source as (
    insert into "public"."todos"("title", "secret")
    select pgrst_body."title", pgrst_body."secret"
    from (select %s::json as json_data) pgrst_payload,
    lateral (select "title", "secret" from json_to_recordset(pgrst_payload.json_data)
             as _("title" text, "secret" text)) pgrst_body
    returning "public"."todos".*
)
select '' as total_result_set, pg_catalog.count(_postgrest_t) as page_total,
       coalesce(json_agg(_postgrest_t), '[]') as body
from (select * from pgrst_source) _postgrest_t
"""
UPSERT = """
with pgrst_source as (
    insert into "public"."todos"("id", "title")
    select pgrst_body."id", pgrst_body."title"
    from (select %s::json as json_data) pgrst_payload,
    lateral (select "id", "title" from json_to_recordset(pgrst_payload.json_data)
             as _("id" bigint, "title" text)) pgrst_body
    on conflict("id") do update set "id" = excluded."id", "title" = excluded."title"
    returning "public"."todos".*
)
select pg_catalog.count(_postgrest_t) from (select * from pgrst_source) _postgrest_t
"""
PATCH = """
with pgrst_source as (
    update "public"."todos" set "secret" = pgrst_body."secret"
    from (select %s::json as json_data) pgrst_payload,
    lateral (select "secret" from json_to_record(pgrst_payload.json_data) as _("secret" text))
        pgrst_body
    where "public"."todos"."title" like %s
    returning 1
)
select pg_catalog.count(_postgrest_t) from (select * from pgrst_source) _postgrest_t
"""
DELETE = """
with pgrst_source as (
    delete from "public"."todos" where "public"."todos"."title" = %s returning "public"."todos".*
)
select pg_catalog.count(_postgrest_t) from (select * from pgrst_source) _postgrest_t
"""


def _requests(client: Rest) -> None:
    client.request(
        BULK_INSERT,
        (json.dumps([{"title": "n1", "secret": None}, {"title": "n2", "secret": "é\\\"'"}]),),
    )
    keep = client.request("select id from todos where title = 'keep'")[0][0]
    client.request(
        UPSERT, (json.dumps([{"id": keep, "title": "kept"}, {"id": 9001, "title": "u"}]),)
    )
    client.request(PATCH, (json.dumps({"secret": "patched"}), "%"))
    client.request(DELETE, ("drop",))


def test_postgrest_statements_with_the_header_roll_back_like_a_real_rollback(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    alice.request("insert into todos (title) values ('keep'), ('drop')")
    Rest(authenticator, sub=BOB).request("insert into todos (title) values ('bob')")
    before = table_rows(project)  # what a real ROLLBACK of the requests leaves
    tx = alice.rpc("tx_begin")
    _requests(Rest(authenticator, sub=ALICE, headers={"x-resilience-tx": str(tx)}))
    assert table_rows(project) != before
    # insert, upsert (its insert and its update), patch, delete
    assert alice.rpc("tx_status", tx_id=tx)["operations"] >= 5
    assert alice.rpc("tx_rollback", tx_id=tx)["status"] == "rolled_back"
    assert table_rows(project) == before
