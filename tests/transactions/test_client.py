"""The Python client: TransactionManager and AsyncTransactionManager over a
conninfo, a connection and a pool; status lines; the janitor; the demo."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgresilience.errors import (
    ClaimConflict,
    InvalidOperation,
    SavepointNotFound,
    TransactionNotActive,
    TransactionNotFound,
    UnknownObject,
)
from pgresilience.transactions import AsyncTransactionManager, TransactionManager
from pgresilience.transactions.janitor import Janitor
from pgresilience.transactions.status import status_lines

from .conftest import table_rows


@pytest.fixture(params=["conninfo", "connection", "pool"])
def tm(request, app, dsn):
    if request.param == "conninfo":
        manager = TransactionManager(dsn)
        yield manager
        manager.close()
    elif request.param == "connection":
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield TransactionManager(conn)
    else:
        with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
            yield TransactionManager(pool)


def test_begin_execute_commit(tm, app):
    tx = tm.begin(timeout=5.0, label="client")
    result = tm.execute(tx, "users", "insert", {"name": "John"})
    assert result.success and result.error is None and result.count == 1
    assert result.data[0]["name"] == "John"
    assert tm.status(tx)["label"] == "client"
    assert [t["id"] for t in tm.active_transactions()] == [tx]
    assert tm.commit(tx)["status"] == "committed"
    assert [r["name"] for r in table_rows(app, "users")] == ["John"]


def test_execute_reports_errors_instead_of_raising(tm, app):
    tx = tm.begin()
    result = tm.execute(tx, "users", "insert", {"nope": 1})
    assert not result.success and isinstance(result.error, UnknownObject)
    assert result.error.sqlstate == "42703"
    with pytest.raises(UnknownObject):
        result.unwrap()
    missing_match = tm.execute(tx, "users", "delete")
    assert isinstance(missing_match.error, InvalidOperation)


def test_errors_map_to_package_exceptions(tm, app):
    with pytest.raises(TransactionNotFound):
        tm.commit("00000000-0000-4000-8000-000000000000")
    tx = tm.begin()
    with pytest.raises(SavepointNotFound):
        tm.rollback_to(tx, "nowhere")
    tm.commit(tx)
    with pytest.raises(TransactionNotActive):
        tm.commit(tx)


def test_savepoint_and_rollback_to(tm, app):
    tx = tm.begin()
    tm.execute(tx, "codes", "insert", {"code": "a"})
    tm.savepoint(tx, "sp")
    tm.execute(tx, "codes", "insert", {"code": "b"})
    assert tm.rollback_to(tx, "sp")["restored_rows"] == 1
    tm.commit(tx)
    assert [r["code"] for r in table_rows(app, "codes")] == ["a"]


def test_context_manager_commits_on_exit(tm, app):
    with tm.transaction(timeout=5.0) as tx:
        user = tx.insert("users", {"name": "John"})[0]
        tx.insert("profiles", {"user_id": user["id"], "bio": "x"})
        tx.update("profiles", {"bio": "y"}, match={"user_id": user["id"]})
        tx.upsert("codes", {"code": "c", "label": "C"})
    assert [r["bio"] for r in table_rows(app, "profiles")] == ["y"]
    assert app.execute(
        "select count(*) from resilience.transactions where status = 'committed'"
    ).fetchone() == (1,)


def test_context_manager_rolls_back_on_exception(tm, app):
    with pytest.raises(Exception) as caught:
        with tm.transaction() as tx:
            user = tx.insert("users", {"name": "John"})[0]
            tx.insert("profiles", {"user_id": user["id"], "bio": ""})  # check violation: raises
    assert getattr(caught.value, "sqlstate", None) == "23514"
    assert table_rows(app, "users") == []
    status = app.execute("select status from resilience.transactions").fetchone()
    assert status == ("rolled_back",)


def test_claim_conflict_raises_claim_conflict(app, dsn):
    with TransactionManager(dsn) as one, TransactionManager(dsn) as two:
        a, b = one.begin(), two.begin()
        one.execute(a, "codes", "insert", {"code": "x"})
        result = two.execute(b, "codes", "upsert", {"code": "x", "label": "two"})
        assert isinstance(result.error, ClaimConflict) and a in str(result.error)


def test_status_lines_list_active_transactions(app, dsn):
    with TransactionManager(dsn) as tm:
        tx = tm.begin(label="visible")
        lines = status_lines(app)
    assert lines[0] == "logical transactions: 1 active"
    assert tx in lines[1] and "'visible'" in lines[1]


def test_status_says_whether_postgrest_reaps_before_each_write(app, make_role):
    lines = status_lines(app)
    assert "PostgREST db-pre-request: not set" in lines[-1]
    role = "pgr_authenticator"
    make_role(role, login=False)
    database = app.info.dbname
    app.execute(
        sql.SQL("alter role {} in database {} set pgrst.db_pre_request = {}").format(
            sql.Identifier(role), sql.Identifier(database), sql.Literal("resilience.tx_pre_request")
        )
    )
    try:
        lines = status_lines(app)
    finally:
        app.execute(
            sql.SQL("alter role {} in database {} reset pgrst.db_pre_request").format(
                sql.Identifier(role), sql.Identifier(database)
            )
        )
    assert lines[-1] == f"  PostgREST db-pre-request: resilience.tx_pre_request (role {role})"


def test_janitor_reaps_expired_transactions(app, dsn):
    with TransactionManager(dsn) as tm:
        tx = tm.begin(timeout=0.05)
        tm.execute(tx, "codes", "insert", {"code": "j"})
    time.sleep(0.1)
    with Janitor(dsn, interval=0.05) as janitor:
        deadline = time.monotonic() + 10
        while janitor.reaped == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert janitor.reaped == 1
    assert table_rows(app, "codes") == []


def test_janitor_stop_is_bounded_while_a_reap_waits_and_it_starts_again(app, dsn):
    """An explicit tx_reap waits on a row lock held elsewhere: stop() returns
    after its timeout (False: the call is still running) instead of hanging;
    the janitor then starts again, and the expired transaction is reaped."""
    with TransactionManager(dsn) as tm:
        tx = tm.begin(timeout=0.05)
        tm.execute(tx, "codes", "insert", {"code": "held"})
    time.sleep(0.1)
    with psycopg.connect(dsn) as holder:
        holder.execute("select * from codes where code = 'held' for update")
        janitor = Janitor(dsn, interval=0.05).start()
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and not app.execute(
                "select exists (select from pg_stat_activity"
                " where wait_event_type = 'Lock' and query like %s)",
                ("%tx_reap%",),
            ).fetchone()[0]
        ):
            time.sleep(0.02)
        assert janitor.stop(timeout=0.2) is False
        holder.rollback()
    janitor.start()
    try:
        deadline = time.monotonic() + 10
        while table_rows(app, "codes") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assert janitor.stop() is True
    assert table_rows(app, "codes") == []
    status = app.execute("select status from resilience.transactions where id = %s", (tx,))
    assert status.fetchone() == ("timed_out",)


def test_demo_walks_the_signup_example(app, dsn):
    from pgresilience.demo.transactions import run

    lines: list[str] = []
    run(dsn, lines.append)
    assert any("failed" in line and "23514" in line for line in lines)
    assert any(line.startswith("users before: 0, after rollback: 0") for line in lines)
    assert app.execute("select count(*) from demo_users where name = 'John'").fetchone() == (0,)
    # The batch part of the demo commits Jane and her profile in one call.
    assert app.execute("select count(*) from demo_profiles").fetchone() == (1,)


@pytest.mark.parametrize("source", ["conninfo", "connection", "pool"])
def test_async_manager(app, dsn, source):
    async def scenario() -> list[Any]:
        if source == "pool":
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
            await pool.open()
            atm = AsyncTransactionManager(pool)
        elif source == "connection":
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            atm = AsyncTransactionManager(conn)
        else:
            atm = AsyncTransactionManager(dsn)
        try:
            async with atm.transaction(timeout=5.0) as tx:
                user = (await tx.insert("users", {"name": "Ada"}))[0]
                await tx.insert("profiles", {"user_id": user["id"], "bio": "kept"})
            with pytest.raises(InvalidOperation):
                async with atm.transaction() as tx:
                    await tx.insert("codes", {"code": "gone"})
                    await tx.update("codes", {"label": "x"}, match={})
            bad = await atm.execute(await atm.begin(), "nope", "insert", {"a": 1})
            assert isinstance(bad.error, UnknownObject)
            return await atm.active_transactions()
        finally:
            if source == "pool":
                await pool.close()
            elif source == "connection":
                await conn.close()
            else:
                await atm.close()

    active = asyncio.run(scenario())
    assert len(active) == 1
    assert [r["bio"] for r in table_rows(app, "profiles")] == ["kept"]
    assert table_rows(app, "codes") == []
