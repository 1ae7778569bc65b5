"""tx_execute and tx_run write with the caller's privileges: the target
table's grants and row-level security apply exactly as to a plain write."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import raises_sqlstate, table_rows
from .sessions import Session

NOTES = "public.notes"
SECRETS = "public.secrets"


def note_id(app: psycopg.Connection[Any], owner: str) -> int:
    row = app.execute("select id from public.notes where owner = %s", (owner,)).fetchone()
    assert row is not None
    return int(row[0])


def via_execute(user: Session, table: str, operation: str, data: Any, match: Any) -> Any:
    """One write through tx_execute in a fresh logical transaction, then commit."""
    tx_id = user.rpc("tx_begin")
    try:
        result = user.rpc(
            "tx_execute", tx_id=tx_id, table_name=table, operation=operation, data=data, match=match
        )
    except psycopg.Error:
        user.rpc("tx_rollback", tx_id=tx_id)
        raise
    user.rpc("tx_commit", tx_id=tx_id)
    return result


def via_run(user: Session, table: str, operation: str, data: Any, match: Any) -> Any:
    """The same write as a one-operation tx_run batch; its result for that operation."""
    operation_spec = {"table": table, "operation": operation, "data": data, "match": match}
    result = user.rpc("tx_run", operations=[operation_spec])
    return result["results"][0]


WRITERS = [pytest.param(via_execute, id="tx_execute"), pytest.param(via_run, id="tx_run")]

DENIED_BY_GRANTS = [
    pytest.param("insert", {"id": 2, "value": "planted"}, None, id="insert"),
    pytest.param("update", {"value": "leaked"}, {"id": 1}, id="update"),
    pytest.param("delete", None, {"id": 1}, id="delete"),
    pytest.param("upsert", {"id": 1, "value": "overwritten"}, None, id="upsert"),
]


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize(("operation", "data", "match"), DENIED_BY_GRANTS)
def test_a_table_without_grants_cannot_be_written(
    app: psycopg.Connection[Any], user_a: Session, write: Any, operation: str, data: Any, match: Any
) -> None:
    before = table_rows(app, SECRETS)
    with raises_sqlstate("42501"):
        write(user_a, SECRETS, operation, data, match)
    assert table_rows(app, SECRETS) == before


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("operation", ["update", "delete"])
def test_rows_hidden_by_rls_are_out_of_reach(
    app: psycopg.Connection[Any], user_a: Session, write: Any, operation: str
) -> None:
    """user-a matching user-b's note finds nothing: RLS filters it out, as for
    a plain UPDATE/DELETE, so the call succeeds with count 0."""
    before = table_rows(app, NOTES)
    data = {"body": "defaced"} if operation == "update" else None
    result = write(user_a, NOTES, operation, data, {"id": note_id(app, "user-b")})
    assert result["count"] == 0 and result["data"] == []
    assert table_rows(app, NOTES) == before


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize(
    ("operation", "data", "match_owner"),
    [
        pytest.param("insert", {"owner": "user-b", "body": "forged"}, None, id="insert as b"),
        pytest.param("update", {"owner": "user-b"}, "user-a", id="give own row to b"),
        pytest.param("upsert", {"owner": "user-b", "body": "forged"}, None, id="upsert as b"),
    ],
)
def test_rls_with_check_refuses_rows_for_someone_else(
    app: psycopg.Connection[Any],
    user_a: Session,
    write: Any,
    operation: str,
    data: Any,
    match_owner: str | None,
) -> None:
    before = table_rows(app, NOTES)
    match = {"id": note_id(app, match_owner)} if match_owner else None
    with raises_sqlstate("42501"):
        write(user_a, NOTES, operation, data, match)
    assert table_rows(app, NOTES) == before


@pytest.mark.parametrize("write", WRITERS)
def test_own_rows_are_writable(app: psycopg.Connection[Any], user_a: Session, write: Any) -> None:
    """The control case: the same calls on one's own row go through."""
    own = note_id(app, "user-a")
    result = write(user_a, NOTES, "update", {"body": "edited"}, {"id": own})
    assert result["count"] == 1 and result["data"][0]["body"] == "edited"


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize(
    ("table", "operation", "data", "match"),
    [
        pytest.param("resilience.audit_log", "delete", None, {"event": "begin"}, id="erase audit"),
        pytest.param(
            "resilience.settings",
            "update",
            {"value": "0 days"},
            {"name": "retention"},
            id="change setting",
        ),
        pytest.param(
            "pg_catalog.pg_authid", "update", {"rolsuper": True}, {"rolname": "anon"}, id="catalog"
        ),
    ],
)
def test_package_and_system_tables_are_out_of_reach(
    app: psycopg.Connection[Any],
    user_a: Session,
    write: Any,
    table: str,
    operation: str,
    data: Any,
    match: Any,
) -> None:
    """tx_run: not granted to clients (42501). tx_execute refuses them even
    earlier, as tables nobody made managed (22023). No row changes."""
    before = table_rows(app, table)
    with raises_sqlstate("42501" if write is via_run else "22023"):
        write(user_a, table, operation, data, match)
    after = table_rows(app, table)
    assert all(row in after for row in before)  # audit rows of the attempt may be added
