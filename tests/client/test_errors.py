"""Errors: one hierarchy, importable from ``pgresilience``, ``detail`` always a
dict, the psycopg error kept as ``__cause__``, docs generated from the one table."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import pgresilience
from pgresilience import errors
from pgresilience.breakers import errors as breaker_errors
from pgresilience.transactions import TransactionManager

ROOT = Path(__file__).resolve().parents[2]


def _package_exceptions() -> list[type[BaseException]]:
    modules = [errors, breaker_errors]
    found = []
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_every_exception_is_importable_from_the_package_and_in_one_hierarchy():
    found = _package_exceptions()
    assert pgresilience.CircuitOpenError in found
    for cls in found:
        assert getattr(pgresilience, cls.__name__) is cls, cls
        assert cls.__name__ in pgresilience.__all__
        assert issubclass(cls, pgresilience.PgResilienceError), cls


def test_every_sqlstate_maps_to_its_class_with_a_dict_detail_and_the_cause():
    for entry in errors.SQLSTATES:
        exc = psycopg.errors.lookup(entry.code)("boom") if _known(entry.code) else None
        if exc is None:
            continue
        mapped = errors.map_error(exc)
        assert type(mapped) is entry.error
        assert mapped.__cause__ is exc
        assert mapped.detail == {}


def _known(code: str) -> bool:
    try:
        psycopg.errors.lookup(code)
    except KeyError:
        return False
    return True


def test_custom_codes_and_plain_text_detail(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "do $$ begin raise exception 'x' using errcode = 'RZ006', detail = 'plain'; end $$"
        )
    mapped = errors.map_error(raised.value)
    assert isinstance(mapped, pgresilience.SavepointNotFound)
    assert mapped.sqlstate == "RZ006"
    assert mapped.detail == {"message": "plain"}
    assert mapped.__cause__ is raised.value


def test_claim_conflict_detail_is_a_dict_whether_reported_or_raised(accounts, dsn):
    with TransactionManager(dsn) as tm:
        holder = tm.begin()
        tm.execute(holder, "accounts", "update", {"balance": 1}, match={"id": 1})
        other = tm.begin()
        reported = tm.execute(other, "accounts", "update", {"balance": 2}, match={"id": 1})
        assert isinstance(reported.error, pgresilience.ClaimConflict)
        assert isinstance(reported.error.detail, dict) and reported.error.detail
        assert isinstance(reported.error.__cause__, psycopg.errors.LockNotAvailable)

        with pytest.raises(pgresilience.ClaimConflict) as raised:
            with tm.transaction() as tx:
                tx.update("accounts", {"balance": 3}, match={"id": 1})
        assert isinstance(raised.value.detail, dict)
        assert raised.value.detail.keys() == reported.error.detail.keys()
        assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)

        batch = tm.run(
            [
                {
                    "table": "accounts",
                    "operation": "update",
                    "data": {"balance": 4},
                    "match": {"id": 1},
                }
            ]
        )
        assert isinstance(batch.error, pgresilience.ClaimConflict)
        assert isinstance(batch.error.detail, dict)
        assert batch.error.detail["index"] == 0
        assert isinstance(batch.error.__cause__, psycopg.Error)
        tm.rollback(holder)
        tm.rollback(other)


def test_docs_errors_md_is_generated_from_the_table():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stdout
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for entry in errors.SQLSTATES:
        assert f"| `{entry.code}` |" in text


@pytest.mark.parametrize(
    ("column", "value", "sqlstate"),
    [
        ("n", "twelve", "22P02"),
        ("code", "too long", "22001"),
        ("n", 2**40, "22003"),
        ("day", "not a date", "22007"),
        ("day", "2026-13-45", "22008"),
    ],
)
def test_a_value_its_column_refuses_is_invalid_operation(conn, dsn, column, value, sqlstate):
    """Whatever the type says of a refused value (bad text, too long, out of
    range, a bad date), the client raises InvalidOperation with that code."""
    conn.execute(
        "create table typed (id int primary key, n int, code varchar(3), day date);"
        "select resilience.manage_table('typed')"
    )
    with TransactionManager(dsn) as tm:
        tx = tm.begin()
        result = tm.execute(tx, "typed", "insert", {"id": 1, column: value})
        assert isinstance(result.error, pgresilience.InvalidOperation)
        assert result.error.sqlstate == sqlstate
        tm.rollback(tx)
