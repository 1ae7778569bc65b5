"""SQL injection through every string the API turns into SQL: table names,
column names (the keys of `data`), `match` keys, operation names and the keys
of a tx_run operation. Each attempt fails with a clear SQLSTATE and changes
nothing; values are data, never SQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import raises_sqlstate, table_rows
from .sessions import Session

NOTES = "public.notes"


def snapshot(app: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything an injection could touch."""
    return {
        "notes": table_rows(app, "public.notes"),
        "secrets": table_rows(app, "public.secrets"),
        "tables": app.execute(
            "select count(*) from pg_class where relnamespace = 'public'::regnamespace"
        ).fetchone(),
        "roles": app.execute("select count(*) from pg_roles where rolsuper").fetchone(),
    }


def execute(user: Session, table: str, operation: str, data: Any = None, match: Any = None) -> Any:
    tx_id = user.rpc("tx_begin")
    try:
        return user.rpc(
            "tx_execute", tx_id=tx_id, table_name=table, operation=operation, data=data, match=match
        )
    finally:
        user.rpc("tx_rollback", tx_id=tx_id)


def run(user: Session, table: str, operation: str, data: Any = None, match: Any = None) -> Any:
    spec = {"table": table, "operation": operation, "data": data, "match": match}
    return user.rpc("tx_run", operations=[spec])["results"][0]


WRITERS = [pytest.param(execute, id="tx_execute"), pytest.param(run, id="tx_run")]

EVIL_TABLE_NAMES = [
    "notes; drop table public.secrets; --",
    "public.notes; delete from public.notes",
    'public.notes" ; drop table public.secrets; --',
    "public.notes where true",
    "public.notes' or '1'='1",
    "(select * from public.secrets) as s",
    "public.secrets--",
    "",
]


@pytest.mark.parametrize("write", WRITERS)
def test_table_names(app: psycopg.Connection[Any], user_a: Session, write: Any) -> None:
    before = snapshot(app)
    for table in EVIL_TABLE_NAMES:
        # Not a table (42P01), or not even a name (42602 invalid_name, 22023).
        with raises_sqlstate("42P01", "42602", "22023"):
            write(user_a, table, "insert", {"body": "x"})
    assert snapshot(app) == before


EVIL_COLUMNS = [
    "body\" = 'x'; drop table public.secrets; --",
    "body) values ('x'); drop table public.secrets; --",
    "body, owner",
    "owner = 'user-b', body",
    "*",
]


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("operation", ["insert", "update", "upsert"])
def test_column_names_in_data(
    app: psycopg.Connection[Any], user_a: Session, write: Any, operation: str
) -> None:
    before = snapshot(app)
    own = app.execute("select id from public.notes where owner = 'user-a'").fetchone()
    assert own is not None
    match = {"id": own[0]} if operation == "update" else None
    for column in EVIL_COLUMNS:
        data = {column: "x"} if operation == "update" else {"body": "x", column: "x"}
        with raises_sqlstate("42703"):
            write(user_a, NOTES, operation, data, match)
    assert snapshot(app) == before


EVIL_MATCH_KEYS = [
    "id = id or true --",
    "1=1) or (true",
    'id" is not null or "id',
    'id" = 1; delete from public.notes; --',
]


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("operation", ["update", "delete"])
def test_match_keys(
    app: psycopg.Connection[Any], user_a: Session, write: Any, operation: str
) -> None:
    before = snapshot(app)
    data = {"body": "pwned"} if operation == "update" else None
    for key in EVIL_MATCH_KEYS:
        with raises_sqlstate("42703"):
            write(user_a, NOTES, operation, data, {key: 1})
    assert snapshot(app) == before


EVIL_OPERATIONS = ["insert; drop table public.secrets", "delete from public.notes", "select", ""]


@pytest.mark.parametrize("write", WRITERS)
def test_operation_names(app: psycopg.Connection[Any], user_a: Session, write: Any) -> None:
    before = snapshot(app)
    for operation in EVIL_OPERATIONS:
        with raises_sqlstate("22023"):
            write(user_a, NOTES, operation, {"body": "x"}, {"id": 1})
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "operation",
    [
        {"table": NOTES, "operation": "insert", "data": {"body": "x"}, "drop table x; --": 1},
        {"table": NOTES, "operation": "insert", "data": {"body": {"$ref": "0.id; drop"}}},
        {"table": NOTES, "operation": "insert", "data": {"body": {"$ref": "x'); drop--.id"}}},
    ],
    ids=["unknown key", "bad ref column", "bad ref index"],
)
def test_tx_run_operation_keys_and_refs(
    app: psycopg.Connection[Any], user_a: Session, operation: dict[str, Any]
) -> None:
    before = snapshot(app)
    first = {"table": NOTES, "operation": "insert", "data": {"body": "first"}}
    with raises_sqlstate("22023"):
        user_a.rpc("tx_run", operations=[first, operation])
    assert snapshot(app) == before


EVIL_VALUES = [
    "'); drop table public.secrets; --",
    "x' or '1'='1",
    '"; delete from public.notes; --',
    "$$; drop table public.secrets; $$",
    "\\'; truncate public.notes; --",
]


@pytest.mark.parametrize("write", WRITERS)
def test_values_are_stored_verbatim(
    app: psycopg.Connection[Any], user_a: Session, write: Any
) -> None:
    before = snapshot(app)
    for value in EVIL_VALUES:
        result = write(user_a, NOTES, "insert", {"body": value})
        assert result["data"][0]["body"] == value
        # Matching on the same string finds that row (if it persisted) and nothing else.
        found = run(user_a, NOTES, "update", {"body": value}, {"body": value})
        assert found["count"] == (1 if write is run else 0)
    after = snapshot(app)
    assert after["secrets"] == before["secrets"] and after["tables"] == before["tables"]
    bodies = [r[0] for r in app.execute("select body from public.notes")]
    assert all(value in bodies for value in EVIL_VALUES) == (write is run)
