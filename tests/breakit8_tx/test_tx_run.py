"""tx_run as a PostgREST app calls it: $ref across operations, hostile names,
failures mid-batch (nothing applied, in plain and in header mode), refs to
missing operations, rows and columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = '''
create schema "we.ird ""s""";
create table "we.ird ""s"""."select" (
    "id" bigint generated always as identity primary key,
    "0" text,
    "2" integer,
    "1.x" text,
    "$ref" jsonb,
    "ü name" text unique
);
create table "we.ird ""s""".child (
    id integer primary key,
    parent bigint not null references "we.ird ""s"""."select" (id),
    "select" text check ("select" <> 'bad')
);
grant usage on schema "we.ird ""s""" to authenticated;
grant select, insert, update, delete on all tables in schema "we.ird ""s""" to authenticated;
grant usage on all sequences in schema "we.ird ""s""" to authenticated;
select resilience.manage_table('"we.ird ""s"""."select"');
select resilience.manage_table('"we.ird ""s""".child');
'''
PARENT = '"we.ird ""s"""."select"'
CHILD = '"we.ird ""s""".child'


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        user = Rest(server, database, sub="batcher")
        try:
            yield user, admin
        finally:
            user.close()


def _run(user: Rest, operations: list[dict[str, Any]], tx: str | None = None) -> Any:
    return user.request("select resilience.tx_run(%s)", (json.dumps(operations),), tx=tx)[0][0]


def _state(admin: Any) -> list[str]:
    return table_text(admin, PARENT) + table_text(admin, CHILD)


def test_refs_to_every_hostile_column_name(app: tuple[Rest, Any]) -> None:
    user, admin = app
    nested = {"a": {"$ref": "9.id"}}  # inside a jsonb value: data
    result = _run(
        user,
        [
            {
                "table": PARENT,
                "operation": "insert",
                "data": [
                    {
                        "0": "zero",
                        "2": 2,
                        "1.x": "dot",
                        "$ref": nested,
                        "ü name": "a",
                    },
                    {"0": "z2", "2": 22, "1.x": None, "$ref": None, "ü name": "b"},
                ],
            },
            {
                "table": CHILD,
                "operation": "insert",
                "data": {"id": 1, "parent": {"$ref": "0.1.id"}, "select": {"$ref": "0.0.0"}},
            },
            {
                "table": PARENT,
                "operation": "update",
                "data": {"0": {"$ref": "0.0.1.x"}, "2": {"$ref": "0.0.2"}},
                "match": {"ü name": {"$ref": "0.1.ü name"}},
            },
            {"table": CHILD, "operation": "lock", "match": {"parent": {"$ref": "1.parent"}}},
        ],
    )
    results = result["results"]
    first, second = results[0]["data"]
    # A nested {"$ref"} inside a jsonb value is data.
    assert first["$ref"] == nested
    assert results[1]["data"] == [{"id": 1, "parent": second["id"], "select": "zero"}]
    assert results[2]["data"][0]["0"] == "dot" and results[2]["data"][0]["2"] == 2
    assert results[3]["count"] == 1


BAD_REFS = [
    ("1.id", "earlier operation"),
    ("0.5.id", "no row 5"),
    ("0.nope", "no column"),
    ("x.id", "invalid $ref"),
    ("", "invalid $ref"),
    ("-1.id", "invalid $ref"),
    ("99999999999.id", "invalid $ref"),
]


def test_a_bad_ref_fails_the_whole_batch(app: tuple[Rest, Any]) -> None:
    user, admin = app
    user.request("insert into " + PARENT + ' ("0") values (%s)', ("seed",))  # noqa: S608
    before = _state(admin)
    for ref, words in BAD_REFS:
        operations = [
            {"table": PARENT, "operation": "update", "data": {"1.x": "x"}, "match": {"0": "seed"}},
            {"table": CHILD, "operation": "insert", "data": {"id": 1, "parent": {"$ref": ref}}},
        ]
        with pytest.raises(psycopg.Error) as raised:
            _run(user, operations)
        assert raised.value.sqlstate == "22023", ref
        assert words in str(raised.value), ref
        assert json.loads(raised.value.diag.message_detail or "{}")["index"] == 1
        assert _state(admin) == before


def test_a_ref_to_an_operation_that_returned_no_rows(app: tuple[Rest, Any]) -> None:
    user, admin = app
    before = _state(admin)
    with pytest.raises(psycopg.Error) as raised:
        _run(
            user,
            [
                {"table": PARENT, "operation": "insert", "data": {"0": "a"}},
                {"table": PARENT, "operation": "delete", "match": {"0": "nothing"}},
                {
                    "table": CHILD,
                    "operation": "insert",
                    "data": {"id": 1, "parent": {"$ref": "1.id"}},
                },
            ],
        )
    assert raised.value.sqlstate == "22023" and "returned 0 row" in str(raised.value)
    assert _state(admin) == before


FAILURES = [
    ({"table": CHILD, "operation": "insert", "data": {"id": 1, "parent": -1}}, "23503"),
    (
        {
            "table": CHILD,
            "operation": "insert",
            "data": {"id": 1, "parent": {"$ref": "0.id"}, "select": "bad"},
        },
        "23514",
    ),
    ({"table": PARENT, "operation": "insert", "data": {"ü name": "dup"}}, "23505"),
    ({"table": PARENT, "operation": "insert", "data": {"id": 5}}, "428C9"),
    ({"table": PARENT, "operation": "insert", "data": {"nope": 1}}, "42703"),
    ({"table": PARENT, "operation": "update", "data": {"0": "x"}}, "22023"),
    ({"table": PARENT, "operation": "merge", "data": {"0": "x"}}, "22023"),
    ({"table": '"we.ird ""s""".nope', "operation": "insert", "data": {}}, "42P01"),
    ({"table": PARENT, "operation": "insert", "data": {"0": "x"}, "extra": 1}, "22023"),
    ({"table": PARENT, "operation": "insert", "data": {"2": "two"}}, "22P02"),
]


@pytest.mark.parametrize("header_mode", [False, True])
def test_a_failure_mid_batch_applies_nothing(app: tuple[Rest, Any], header_mode: bool) -> None:
    """Operations 0 and 1 succeed, 2 fails: nothing of 0 and 1 stays, and in
    header mode the logical transaction records nothing of the batch."""
    user, admin = app
    user.request("insert into " + PARENT + ' ("ü name") values (%s)', ("dup",))  # noqa: S608
    before = _state(admin)
    for bad, sqlstate in FAILURES:
        _fail_mid_batch(user, admin, before, bad, sqlstate, header_mode)


def _fail_mid_batch(
    user: Rest, admin: Any, before: list[str], bad: dict[str, Any], sqlstate: str, header_mode: bool
) -> None:
    tx = str(user.rpc("tx_begin", 60000)) if header_mode else None
    operations = [
        {"table": PARENT, "operation": "insert", "data": {"0": "new"}},
        {"table": PARENT, "operation": "update", "data": {"0": "upd"}, "match": {"ü name": "dup"}},
        bad,
    ]
    with pytest.raises(psycopg.Error) as raised:
        _run(user, operations, tx=tx)
    assert raised.value.sqlstate == sqlstate, str(raised.value)
    assert json.loads(raised.value.diag.message_detail or "{}")["index"] == 2
    assert _state(admin) == before
    if tx is not None:
        status = user.rpc("tx_status", tx)
        assert status["status"] == "active"
        assert admin.execute(
            "select count(*) from resilience.tx_statements where tx_id = %s", (tx,)
        ).fetchone() == (0,)
        assert user.rpc("tx_rollback", tx)["success"] is True
        # Nothing stays claimed: a plain write of the same row goes through.
        user.request("update " + PARENT + ' set "0" = null where "ü name" = \'dup\'')  # noqa: S608


def test_a_batch_in_header_mode_rolls_back_with_the_logical_transaction(
    app: tuple[Rest, Any],
) -> None:
    user, admin = app
    user.request("insert into " + PARENT + ' ("ü name") values (%s)', ("kept",))  # noqa: S608
    before = _state(admin)
    tx = str(user.rpc("tx_begin", 60000))
    user.rpc("tx_savepoint", tx, "s")
    _run(
        user,
        [
            {"table": PARENT, "operation": "insert", "data": {"0": "p"}},
            {"table": CHILD, "operation": "insert", "data": {"id": 7, "parent": {"$ref": "0.id"}}},
            {"table": PARENT, "operation": "update", "data": {"2": 9}, "match": {"ü name": "kept"}},
            {
                "table": CHILD,
                "operation": "upsert",
                "data": {"id": 7, "parent": {"$ref": "0.id"}, "select": "u"},
            },
        ],
        tx=tx,
    )
    assert user.rpc("tx_status", tx)["status"] == "active"
    user.rpc("tx_rollback_to", tx, "s")
    assert _state(admin) == before
    _run(user, [{"table": PARENT, "operation": "delete", "match": {"ü name": "kept"}}], tx=tx)
    assert user.rpc("tx_rollback", tx)["success"] is True
    assert _state(admin) == before


def test_a_mixed_case_name_as_supabase_js_writes_it_gets_a_hint(app: tuple[Rest, Any]) -> None:
    """supabase-js names a table exactly ('User', as Prisma creates it); here
    names are SQL identifiers: the 42P01 says how to quote it."""
    user, admin = app
    admin.execute('create table "User" (id integer primary key)')
    admin.execute('grant select, insert on "User" to authenticated')
    for name, quoted in (("User", '"User"'), ("public.User", 'public."User"')):
        with pytest.raises(psycopg.errors.UndefinedTable) as raised:
            _run(user, [{"table": name, "operation": "insert", "data": {"id": 1}}])
        assert raised.value.diag.message_hint is not None
        assert "pass " + quoted in raised.value.diag.message_hint
    _run(user, [{"table": '"User"', "operation": "insert", "data": {"id": 1}}])


def test_a_lock_in_a_header_mode_batch_claims_nothing(
    app: tuple[Rest, Any], server: Server, database: str
) -> None:
    """Header mode captures the batch's writes; a lock is no write: it is the
    plain FOR UPDATE NOWAIT of the call, and the row stays free afterwards
    (tx_execute's lock is the one that claims)."""
    user, admin = app
    user.request("insert into " + PARENT + ' ("ü name") values (%s)', ("free",))  # noqa: S608
    tx = str(user.rpc("tx_begin", 60000))
    locked = _run(
        user, [{"table": PARENT, "operation": "lock", "match": {"ü name": "free"}}], tx=tx
    )
    assert locked["results"][0]["count"] == 1
    other = Rest(server, database, sub="other")
    try:
        other.request("update " + PARENT + " set \"0\" = 'other' where \"ü name\" = 'free'")  # noqa: S608
    finally:
        other.close()
    assert user.rpc("tx_status", tx)["status"] == "active"
    assert user.rpc("tx_rollback", tx)["success"] is True
    assert admin.execute('select "0" from ' + PARENT).fetchone() == ("other",)  # noqa: S608
