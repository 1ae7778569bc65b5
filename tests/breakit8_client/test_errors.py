"""docs/errors.md through the Python client: every SQLSTATE a call can meet
arrives as its documented class, with ``sqlstate``, a dict ``detail`` and the
psycopg error as ``__cause__``; nothing is swallowed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    DatabaseError,
    InvalidOperation,
    NotSupported,
    PermissionDenied,
    PgResilienceError,
    RollbackConflict,
    SavepointNotFound,
    TransactionExpired,
    TransactionManager,
    TransactionNotActive,
    TransactionNotFound,
    UnknownObject,
)
from pgresilience.errors import SQLSTATES

TYPED = """
create table typed (
    id int primary key,
    code varchar(3),
    day date,
    stamp timestamptz,
    amount numeric(4, 1) check (amount >= 0),
    unique (code)
);
insert into typed values (1, 'a', '2026-01-01', now(), 1);
select resilience.manage_table('typed');
create table parent (id int primary key);
create table child (id int primary key, parent_id int references parent on delete cascade);
insert into parent values (1); insert into child values (1, 1);
select resilience.manage_table('parent');
"""


def check(error: BaseException, cls: type[PgResilienceError], sqlstate: str) -> None:
    assert type(error) is cls, (type(error), error)
    assert isinstance(error, PgResilienceError)
    assert error.sqlstate == sqlstate
    assert isinstance(error.detail, dict)
    assert isinstance(error.__cause__, psycopg.Error)
    assert error.__cause__.sqlstate == sqlstate


@pytest.fixture
def tm(accounts: psycopg.Connection[Any], dsn: str) -> Any:
    accounts.execute(TYPED)
    with TransactionManager(dsn) as manager:
        yield manager


VALUE_ERRORS: list[tuple[dict[str, Any], dict[str, Any], type[PgResilienceError], str]] = [
    ({"code": "abcd"}, {"id": 1}, InvalidOperation, "22001"),
    ({"amount": 1000}, {"id": 1}, InvalidOperation, "22003"),
    ({"day": "yesterday-ish"}, {"id": 1}, InvalidOperation, "22007"),
    ({"day": "2026-13-45"}, {"id": 1}, InvalidOperation, "22008"),
    ({"id": "one"}, {"id": 1}, InvalidOperation, "22P02"),
    ({"amount": 1}, {"id": "one"}, InvalidOperation, "22P02"),
    ({"nope": 1}, {"id": 1}, UnknownObject, "42703"),
    ({"amount": 1}, {"nope": 1}, UnknownObject, "42703"),
    ({"amount": -1}, {"id": 1}, DatabaseError, "23514"),  # the table's own check
]


def test_value_errors(tm: TransactionManager) -> None:
    tx = tm.begin()
    for data, match, cls, sqlstate in VALUE_ERRORS:
        result = tm.execute(tx, "typed", "update", data, match)
        assert not result.success and result.error is not None
        check(result.error, cls, sqlstate)
        with pytest.raises(cls) as raised:  # the handle of transaction() raises the same
            with tm.transaction() as handle:
                handle.update("typed", data, match)
        check(raised.value, cls, sqlstate)
    assert tm.status(tx)["status"] == "active"  # failed calls leave the transaction as it was


def test_lifecycle_errors(tm: TransactionManager, accounts: psycopg.Connection[Any]) -> None:
    with pytest.raises(TransactionNotFound) as raised:
        tm.status(uuid.uuid4())
    check(raised.value, TransactionNotFound, "RZ001")

    tx = tm.begin(label="ends")
    tm.commit(tx)
    with pytest.raises(TransactionNotActive) as ended:
        tm.commit(tx)
    check(ended.value, TransactionNotActive, "RZ002")
    result = tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1})
    assert result.error is not None
    check(result.error, TransactionNotActive, "RZ002")

    short = tm.begin(timeout=0.001)
    time.sleep(0.05)
    with pytest.raises(TransactionExpired) as expired:
        tm.commit(short)
    check(expired.value, TransactionExpired, "RZ003")
    assert isinstance(expired.value, TransactionNotActive)

    tx = tm.begin()
    with pytest.raises(SavepointNotFound) as missing:
        tm.rollback_to(tx, "nowhere")
    check(missing.value, SavepointNotFound, "RZ006")

    for bad in (-1.0, 0.0):
        with pytest.raises(InvalidOperation) as timeout:
            tm.begin(timeout=bad)
        check(timeout.value, InvalidOperation, "22023")
    with pytest.raises(InvalidOperation):  # refused before the call: no __cause__
        tm.begin(timeout=float("inf"))


def test_claims_and_locks(tm: TransactionManager, dsn: str) -> None:
    holder = tm.begin(timeout=30.0)
    tm.execute(holder, "accounts", "update", {"balance": 1}, {"id": 1})
    other = tm.begin()
    result = tm.execute(other, "accounts", "update", {"balance": 2}, {"id": 1})
    assert result.error is not None
    check(result.error, ClaimConflict, "55P03")
    assert result.error.detail["holder"] == holder  # names the holder and its expiry
    assert "expires_at" in result.error.detail
    with psycopg.connect(dsn) as plain:  # a row locked by a plain database transaction
        plain.execute("select 1 from accounts where id = 2 for update")
        locked = tm.execute(other, "accounts", "lock", None, {"id": 2})
        assert locked.error is not None
        check(locked.error, ClaimConflict, "55P03")


def test_rollback_conflict_lists_the_rows(
    tm: TransactionManager, accounts: psycopg.Connection[Any]
) -> None:
    tx = tm.begin()
    tm.execute(tx, "accounts", "update", {"balance": 1}, {"id": 3}).unwrap()
    with accounts.transaction():  # behind its back: the claim guard (a trigger) off
        accounts.execute("set local session_replication_role = replica")
        accounts.execute("update accounts set balance = 2 where id = 3")
    with pytest.raises(RollbackConflict) as raised:
        tm.rollback(tx)
    check(raised.value, RollbackConflict, "RZ005")
    assert raised.value.detail  # says which rows
    assert tm.status(tx)["status"] == "active"  # nothing restored, still the caller's


def test_objects_and_support(tm: TransactionManager) -> None:
    tx = tm.begin()
    cases: list[tuple[str, str, Any, Any, type[PgResilienceError], str]] = [
        ("nosuchtable", "insert", {"id": 1}, None, UnknownObject, "42P01"),
        ("accounts", "merge", {"id": 1}, None, InvalidOperation, "22023"),
        ("accounts", "update", {"balance": 1}, None, InvalidOperation, "22023"),
        ("parent", "delete", None, {"id": 1}, NotSupported, "0A000"),  # cascade to unmanaged
        ("resilience.transactions", "delete", None, {"id": 1}, None, ""),  # package table
    ]
    for table, op, data, match, cls, sqlstate in cases:
        result = tm.execute(tx, table, op, data, match)
        assert not result.success and result.error is not None, table
        if cls is not None:
            check(result.error, cls, sqlstate)


def test_permission_denied_for_a_role_without_grants(
    tm: TransactionManager, make_role: Callable[..., str]
) -> None:
    user_dsn = make_role("b8_client_user", member_of=("resilience_user",))
    with TransactionManager(user_dsn) as user:
        tx = user.begin()
        result = user.execute(tx, "accounts", "update", {"balance": 1}, {"id": 1})
        assert result.error is not None
        check(result.error, PermissionDenied, "42501")
        # another role's transaction does not exist for this one
        foreign = tm.begin()
        with pytest.raises(TransactionNotFound):
            user.commit(foreign)


def test_async_errors_are_the_same_classes(accounts: psycopg.Connection[Any], dsn: str) -> None:
    async def main() -> None:
        async with AsyncTransactionManager(dsn) as tm:
            with pytest.raises(TransactionNotFound) as raised:
                await tm.commit(uuid.uuid4())
            check(raised.value, TransactionNotFound, "RZ001")
            tx = await tm.begin()
            result = await tm.execute(tx, "accounts", "update", {"nope": 1}, {"id": 1})
            assert result.error is not None
            check(result.error, UnknownObject, "42703")

    asyncio.run(main())


def test_every_documented_class_is_exported() -> None:
    import pgresilience

    for row in SQLSTATES:
        assert getattr(pgresilience, row.error.__name__) is row.error
        assert issubclass(row.error, pgresilience.PgResilienceError)
