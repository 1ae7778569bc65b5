"""Lifecycle attacks: finishing a transaction twice, from two sessions at
once, and the states that follow. Every refusal is a documented SQLSTATE."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, rows_text, sqlstate_of


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("""
        create table accounts (id int primary key, balance int not null);
        insert into accounts values (1, 100), (2, 100);
        select resilience.manage_table('accounts');
    """)
    return conn


def test_rollback_of_a_committed_transaction_is_rz002(accounts: psycopg.Connection[Any]) -> None:
    """docs/reference.md, tx_rollback: errors RZ001, RZ002, RZ005. It used to
    fail with 22004 (RAISE with a NULL hint) for a committed transaction."""
    tx = begin(accounts)
    execute(accounts, tx, "accounts", "update", {"balance": 1}, {"id": 1})
    call(accounts, "tx_commit", tx)
    assert sqlstate_of(call, accounts, "tx_rollback", tx) == "RZ002"
    assert sqlstate_of(call, accounts, "tx_rollback", tx, "again", True) == "RZ002"
    assert sqlstate_of(call, accounts, "tx_commit", tx) == "RZ002"
    assert rows_text(accounts, "accounts", "id") == ["(1,1)", "(2,100)"]


def test_finishing_twice(accounts: psycopg.Connection[Any]) -> None:
    tx = begin(accounts)
    execute(accounts, tx, "accounts", "update", {"balance": 1}, {"id": 1})
    first = call(accounts, "tx_rollback", tx)
    assert first["status"] == "rolled_back" and first["restored_rows"] == 1
    second = call(accounts, "tx_rollback", tx)  # harmless: the first did the work
    assert second["status"] == "rolled_back" and second["restored_rows"] == 0
    for function in ("tx_commit", "tx_savepoint"):
        args = (tx,) if function == "tx_commit" else (tx, "s")
        assert sqlstate_of(call, accounts, function, *args) == "RZ002"
    assert sqlstate_of(execute, accounts, tx, "accounts", "delete", None, {"id": 1}) == "RZ002"
    assert rows_text(accounts, "accounts", "id") == ["(1,100)", "(2,100)"]


def _wait_until_blocked(observer: psycopg.Connection[Any], pid: int) -> None:
    """Polls pg_stat_activity until backend ``pid`` waits on a lock (no sleep
    stands in for it: the state is observed)."""
    for _ in range(100_000):
        row = observer.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
    raise AssertionError("the second session never waited on the transaction's row")


@pytest.mark.parametrize("first", ["tx_commit", "tx_rollback"])
def test_concurrent_commit_and_rollback_of_one_transaction(
    accounts: psycopg.Connection[Any], dsn: str, first: str
) -> None:
    """Two sessions finish the same transaction at once: the one that comes
    second waits for the first's database transaction and then gets RZ002
    (commit after rollback, rollback after commit), never 22004 nor a
    half-finished state."""
    second = "tx_rollback" if first == "tx_commit" else "tx_commit"
    tx = begin(accounts)
    execute(accounts, tx, "accounts", "update", {"balance": 7}, {"id": 1})
    outcome: dict[str, str | None] = {}
    with (
        psycopg.connect(dsn) as one,
        psycopg.connect(dsn, autocommit=True) as two,
    ):
        call(one, first, tx)  # its database transaction stays open

        def finish() -> None:
            outcome["second"] = sqlstate_of(call, two, second, tx)

        thread = threading.Thread(target=finish)
        thread.start()
        _wait_until_blocked(accounts, two.info.backend_pid)
        one.commit()
        thread.join()
    assert outcome["second"] == "RZ002"
    status = call(accounts, "tx_status", tx)["status"]
    expected = ["(1,7)", "(2,100)"] if first == "tx_commit" else ["(1,100)", "(2,100)"]
    assert status == ("committed" if first == "tx_commit" else "rolled_back")
    assert rows_text(accounts, "accounts", "id") == expected
