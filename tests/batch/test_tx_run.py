"""tx_run(operations): an atomic batch of writes in ONE real database
transaction. A later operation may use a value an earlier one returned
({"$ref": "<index>.<column>"}). Any failure: nothing persists, and the error
keeps the original SQLSTATE and says which operation failed and why."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgresilience.errors import ClaimConflict, InvalidOperation
from pgresilience.transactions import AsyncTransactionManager, TransactionManager, batch
from pgresilience.transactions.batch import BatchResult, operation, ref

SCHEMA = """
create table public.users (
    id bigint generated always as identity primary key,
    name text not null unique,
    created_at timestamptz not null default now()
);
create table public.profiles (
    id bigint generated always as identity primary key,
    user_id bigint not null references public.users (id),
    bio text,
    settings jsonb
);
"""


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(SCHEMA)
    return conn


def tx_run(conn: psycopg.Connection[Any], operations: Any) -> Any:
    row = conn.execute("select resilience.tx_run(%s)", (Jsonb(operations),)).fetchone()
    assert row is not None
    return row[0]


def rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"select * from {table} order by id").fetchall()


def test_a_user_and_its_profile_in_one_call(db: psycopg.Connection[Any]) -> None:
    result = tx_run(
        db,
        [
            {"table": "users", "operation": "insert", "data": {"name": "john"}},
            {
                "table": "profiles",
                "operation": "insert",
                "data": {"user_id": {"$ref": "0.id"}, "bio": "hello"},
            },
        ],
    )
    assert result["success"] is True
    user, profile = result["results"]
    assert user["count"] == 1 and user["data"][0]["name"] == "john"
    # Identity and default columns come back as the table made them.
    assert user["data"][0]["id"] > 0 and user["data"][0]["created_at"]
    assert profile["count"] == 1
    assert profile["data"][0]["user_id"] == user["data"][0]["id"]
    assert [r[1:3] for r in rows(db, "public.profiles")] == [(user["data"][0]["id"], "hello")]


def test_refs_pick_a_row_and_work_in_match(db: psycopg.Connection[Any]) -> None:
    result = tx_run(
        db,
        [
            {"table": "users", "operation": "insert", "data": [{"name": "ann"}, {"name": "bob"}]},
            # "<index>.<row>.<column>": the second user.
            {"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": "0.1.id"}}},
            # "<index>.<column>" in match: the first row of operation 1.
            {
                "table": "profiles",
                "operation": "update",
                "data": {"bio": "bob's"},
                "match": {"id": {"$ref": "1.id"}},
            },
            {"table": "users", "operation": "delete", "match": {"id": {"$ref": "0.0.id"}}},
        ],
    )
    ann, bob = result["results"][0]["data"]
    assert result["results"][2]["data"][0]["user_id"] == bob["id"]
    assert result["results"][2]["data"][0]["bio"] == "bob's"
    assert result["results"][3]["data"] == [ann]
    assert [r[1] for r in rows(db, "public.users")] == ["bob"]


def test_only_whole_column_values_are_references(db: psycopg.Connection[Any]) -> None:
    """A {"$ref": ...} nested inside a jsonb value is data, stored as is."""
    nested = {"theme": {"$ref": "0.id"}}
    result = tx_run(
        db,
        [
            {"table": "users", "operation": "insert", "data": {"name": "cy"}},
            {
                "table": "profiles",
                "operation": "insert",
                "data": {"user_id": {"$ref": "0.id"}, "settings": nested},
            },
        ],
    )
    assert result["results"][1]["data"][0]["settings"] == nested


def test_upsert_in_a_batch(db: psycopg.Connection[Any]) -> None:
    first = tx_run(db, [{"table": "users", "operation": "insert", "data": {"name": "dee"}}])
    user_id = first["results"][0]["data"][0]["id"]
    db.execute("create table public.scores (user_id bigint primary key, points integer)")
    result = tx_run(
        db,
        [
            {"table": "scores", "operation": "upsert", "data": {"user_id": user_id, "points": 1}},
            {"table": "scores", "operation": "upsert", "data": {"user_id": user_id, "points": 2}},
        ],
    )
    assert [r["count"] for r in result["results"]] == [1, 1]
    assert db.execute("select points from public.scores").fetchall() == [(2,)]


FAILURES = [
    # (operations, SQLSTATE, failing index) -- the second user breaks the batch.
    pytest.param(
        [{"table": "profiles", "operation": "insert", "data": {"user_id": 999}}],
        "23503",
        2,
        id="foreign key",
    ),
    pytest.param(
        [{"table": "users", "operation": "insert", "data": {"name": "eve"}}],
        "23505",
        2,
        id="unique",
    ),
    pytest.param(
        [{"table": "users", "operation": "insert", "data": {"nope": 1}}], "42703", 2, id="column"
    ),
    pytest.param(
        [{"table": "nowhere", "operation": "insert", "data": {"a": 1}}], "42P01", 2, id="table"
    ),
    pytest.param(
        [{"table": "users", "operation": "merge", "data": {"name": "x"}}],
        "22023",
        2,
        id="operation",
    ),
    pytest.param(
        [{"table": "users", "operation": "delete"}], "22023", 2, id="delete without match"
    ),
    pytest.param(
        [{"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": "2.id"}}}],
        "22023",
        2,
        id="ref to itself",
    ),
    pytest.param(
        [{"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": "0.5.id"}}}],
        "22023",
        2,
        id="ref to a missing row",
    ),
    pytest.param(
        [{"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": "0.uid"}}}],
        "22023",
        2,
        id="ref to a missing column",
    ),
    pytest.param(
        [{"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": 0}}}],
        "22023",
        2,
        id="ref not a string",
    ),
    pytest.param(
        [{"table": "users", "operation": "insert", "data": {"name": "x"}, "extra": 1}],
        "22023",
        2,
        id="unknown key",
    ),
    pytest.param(["insert into users"], "22023", 2, id="not an object"),
]


@pytest.mark.parametrize(("last", "sqlstate", "index"), FAILURES)
def test_any_failure_undoes_the_whole_batch(
    db: psycopg.Connection[Any], last: list[Any], sqlstate: str, index: int
) -> None:
    operations = [
        {"table": "users", "operation": "insert", "data": {"name": "eve"}},
        {"table": "profiles", "operation": "insert", "data": {"user_id": {"$ref": "0.id"}}},
        *last,
    ]
    with pytest.raises(psycopg.Error) as info:
        tx_run(db, operations)

    assert info.value.sqlstate == sqlstate
    detail = json.loads(info.value.diag.message_detail or "")
    assert detail["index"] == index
    failed = operations[index]
    if isinstance(failed, dict):
        assert (detail["table"], detail["operation"]) == (failed["table"], failed["operation"])
    assert detail["error"]
    assert f"operation {index}" in (info.value.diag.message_primary or "")
    assert rows(db, "public.users") == [] and rows(db, "public.profiles") == []


@pytest.mark.parametrize("operations", [[], {}, "[]", None, 1], ids=repr)
def test_the_batch_must_be_a_non_empty_array(db: psycopg.Connection[Any], operations: Any) -> None:
    with pytest.raises(psycopg.Error) as info:
        tx_run(db, operations)
    assert info.value.sqlstate == "22023"


def test_a_row_claimed_by_a_logical_transaction_fails_the_batch(
    db: psycopg.Connection[Any],
) -> None:
    """tx_run writes outside any logical transaction, so the claim guard
    applies: the claimed row fails the batch at once with 55P03."""
    user_id = tx_run(db, [{"table": "users", "operation": "insert", "data": {"name": "fay"}}])[
        "results"
    ][0]["data"][0]["id"]
    db.execute("select resilience.manage_table('public.users')")
    tx_id = db.execute("select resilience.tx_begin()").fetchone()
    assert tx_id is not None
    db.execute(
        "select resilience.tx_execute(%s, 'users', 'update', %s, %s)",
        (tx_id[0], Jsonb({"name": "fay (editing)"}), Jsonb({"id": user_id})),
    )

    with pytest.raises(psycopg.Error) as info:
        tx_run(
            db,
            [
                {"table": "users", "operation": "insert", "data": {"name": "gus"}},
                {
                    "table": "users",
                    "operation": "update",
                    "data": {"name": "x"},
                    "match": {"id": user_id},
                },
            ],
        )
    assert info.value.sqlstate == "55P03"
    assert json.loads(info.value.diag.message_detail or "")["index"] == 1
    assert [r[1] for r in rows(db, "public.users")] == ["fay (editing)"]


# The Python client: TransactionManager.run / AsyncTransactionManager.run.


def test_python_run_returns_the_rows_of_every_operation(
    db: psycopg.Connection[Any],
) -> None:
    tm = TransactionManager(db)
    result = tm.run(
        [
            operation("users", "insert", {"name": "hal"}),
            operation("profiles", "insert", {"user_id": ref(0, "id"), "bio": "hi"}),
        ]
    )
    assert result.success is True and result.error is None and len(result) == 2
    assert result[0].count == 1 and result[0].data[0]["name"] == "hal"
    assert result.data[1][0]["user_id"] == result[0].data[0]["id"]
    assert result.unwrap() == result.data


def test_python_run_reports_the_mapped_error_naming_the_operation(
    db: psycopg.Connection[Any],
) -> None:
    result = TransactionManager(db).run(
        [
            operation("users", "insert", {"name": "ida"}),
            operation("profiles", "insert", {"user_id": ref(0, "id", row=3)}),
        ]
    )
    assert result.success is False and result.results == []
    assert isinstance(result.error, InvalidOperation)
    assert result.error.sqlstate == "22023"
    assert result.error.detail["index"] == 1
    assert result.error.detail["table"] == "profiles"
    with pytest.raises(InvalidOperation):
        result.unwrap()
    assert rows(db, "public.users") == []


def test_python_run_maps_a_claim_conflict(db: psycopg.Connection[Any]) -> None:
    db.execute("insert into public.users (name) values ('jo')")
    db.execute("select resilience.manage_table('public.users')")
    tm = TransactionManager(db)
    with tm.transaction() as tx:
        tx.update("users", {"name": "jo2"}, match={"name": "jo"})
        result = tm.run([operation("users", "delete", match={"name": "jo2"})])
        assert isinstance(result.error, ClaimConflict)
        assert result.error.detail["index"] == 0
    assert [r[1] for r in rows(db, "public.users")] == ["jo2"]


def test_python_run_async(dsn: str, db: psycopg.Connection[Any]) -> None:
    async def scenario() -> BatchResult:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await AsyncTransactionManager(aconn).run(
                [
                    operation("users", "insert", [{"name": "kim"}, {"name": "lee"}]),
                    operation("profiles", "insert", {"user_id": ref(0, "id", row=1)}),
                ]
            )

    result = asyncio.run(scenario())
    assert result[1].data[0]["user_id"] == result[0].data[1]["id"]


def test_python_refs_and_operations_are_plain_json() -> None:
    assert ref(0, "id") == {"$ref": "0.id"}
    assert ref(2, "id", row=1) == {"$ref": "2.1.id"}
    assert operation("t", "delete", match={"id": 1}) == {
        "table": "t",
        "operation": "delete",
        "match": {"id": 1},
    }
    with pytest.raises(ValueError):
        ref(-1, "id")
    with pytest.raises(TypeError):
        batch.batch_params({"table": "t", "operation": "insert"})
