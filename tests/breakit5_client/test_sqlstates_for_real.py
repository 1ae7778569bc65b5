"""docs/errors.md, raised for real: every documented SQLSTATE is provoked the
way an app meets it, through the Python client, and must arrive as its
documented class with ``.sqlstate``, a dict ``.detail`` and the psycopg error
as ``__cause__``; the manager's connection is then idle, ready for the next
call, and the failed call left no database transaction open."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgresilience
from pgresilience import TransactionManager
from pgresilience.errors import SQLSTATES, map_error

from .conftest import open_database_transactions

SCHEMA = """
create table accounts (
    id int primary key,
    email varchar(20) not null unique,
    code char(3),
    born date,
    stamp timestamptz,
    amount int check (amount >= 0)
);
create table parents (id int primary key);
create table children (id int primary key, parent int references parents on delete cascade);
insert into accounts (id, email) values (1, 'ann@example.com');
insert into parents values (1);
insert into children values (1, 1);
select resilience.manage_table('accounts');
select resilience.manage_table('parents');
"""


@pytest.fixture
def tm(conn: psycopg.Connection[Any], dsn: str) -> Any:
    conn.execute(SCHEMA)
    with TransactionManager(dsn, pool_size=1) as manager:
        yield manager


def _execute(tm: TransactionManager, *args: Any) -> Any:
    """One tx_execute in a fresh logical transaction, the error raised."""
    tx = tm.begin()
    return tm.execute(tx, *args).unwrap()


def rz002(tm: TransactionManager) -> Any:
    tx = tm.begin()
    tm.commit(tx)
    return tm.commit(tx)


def rz003(tm: TransactionManager) -> Any:
    tx = tm.begin(timeout=0.05)
    time.sleep(0.3)
    return tm.execute(tx, "accounts", "update", {"amount": 1}, {"id": 1}).unwrap()


def rz005(tm: TransactionManager, conn: psycopg.Connection[Any]) -> Any:
    # the restore of the deleted row meets a unique email taken meanwhile
    tx = tm.begin()
    tm.execute(tx, "accounts", "delete", None, {"id": 1}).unwrap()
    conn.execute("insert into accounts (id, email) values (2, 'ann@example.com')")
    return tm.rollback(tx)


def rz006(tm: TransactionManager) -> Any:
    return tm.rollback_to(tm.begin(), "never taken")


def rz007(tm: TransactionManager, conn: psycopg.Connection[Any]) -> Any:
    # no event triggers (a non-superuser install): a column added behind manage_table
    conn.execute("alter event trigger resilience_managed_ddl_end disable")
    conn.execute("alter table accounts add column extra int")
    return _execute(tm, "accounts", "update", {"amount": 2}, {"id": 1})


def p55p03(tm: TransactionManager) -> Any:
    holder = tm.begin()
    tm.execute(holder, "accounts", "update", {"amount": 3}, {"id": 1}).unwrap()
    return _execute(tm, "accounts", "update", {"amount": 4}, {"id": 1})


def p55006(tm: TransactionManager, conn: psycopg.Connection[Any]) -> Any:
    tm.execute(tm.begin(), "accounts", "update", {"amount": 5}, {"id": 1}).unwrap()
    try:
        conn.execute("select resilience.unmanage_table('accounts')")
    except psycopg.Error as error:  # no client method: the mapping of the SQL call
        raise map_error(error) from error


def p42501(tm: TransactionManager, conn: psycopg.Connection[Any], role_dsn: str) -> Any:
    with TransactionManager(role_dsn) as stranger:
        return _execute(stranger, "accounts", "update", {"amount": 6}, {"id": 1})


# (documented SQLSTATE, how an app meets it)
CASES: list[tuple[str, Callable[..., Any]]] = [
    ("RZ001", lambda tm: tm.status(uuid.uuid4())),
    ("RZ002", rz002),
    ("RZ003", rz003),
    ("RZ005", rz005),
    ("RZ006", rz006),
    ("RZ007", rz007),
    ("55P03", p55p03),
    ("55006", p55006),
    ("22023", lambda tm: _execute(tm, "accounts", "merge", {"id": 3})),
    ("22P02", lambda tm: _execute(tm, "accounts", "insert", {"id": "three", "email": "x"})),
    ("22001", lambda tm: _execute(tm, "accounts", "insert", {"id": 3, "email": "x" * 21})),
    ("22003", lambda tm: _execute(tm, "accounts", "insert", {"id": 2**40, "email": "x"})),
    (
        "22007",
        lambda tm: _execute(tm, "accounts", "insert", {"id": 3, "email": "x", "born": "soon"}),
    ),
    (
        "22008",
        lambda tm: _execute(
            tm, "accounts", "insert", {"id": 3, "email": "x", "born": "2026-13-45"}
        ),
    ),
    ("42P01", lambda tm: _execute(tm, "no_such_table", "insert", {"id": 3})),
    ("42703", lambda tm: _execute(tm, "accounts", "insert", {"id": 3, "nope": 1})),
    ("42501", p42501),
    ("0A000", lambda tm: _execute(tm, "parents", "delete", None, {"id": 1})),
    ("23514", lambda tm: _execute(tm, "accounts", "update", {"amount": -1}, {"id": 1})),
]
DOCUMENTED = {s.code: s.error for s in SQLSTATES}


def test_the_cases_cover_every_documented_sqlstate() -> None:
    assert {code for code, _ in CASES} - {"23514"} == set(DOCUMENTED)


@pytest.mark.parametrize(("code", "provoke"), CASES, ids=[c for c, _ in CASES])
def test_each_documented_sqlstate_arrives_as_its_class(
    tm: TransactionManager,
    conn: psycopg.Connection[Any],
    make_role: Callable[..., str],
    code: str,
    provoke: Callable[..., Any],
) -> None:
    arguments: list[Any] = [tm]
    names = provoke.__code__.co_varnames[: provoke.__code__.co_argcount]
    if "conn" in names:
        arguments.append(conn)
    if "role_dsn" in names:
        arguments.append(make_role("bk5_stranger"))
    with pytest.raises(pgresilience.PgResilienceError) as caught:
        provoke(*arguments)
    error = caught.value
    assert type(error) is DOCUMENTED.get(code, pgresilience.DatabaseError)
    assert error.sqlstate == code
    assert isinstance(error.detail, dict)
    assert isinstance(error.__cause__, psycopg.Error)
    assert error.__cause__.sqlstate == code
    # the manager goes on: its one connection is idle, nothing was left open
    assert open_database_transactions(conn) == []
    assert isinstance(tm.active_transactions(), list)
