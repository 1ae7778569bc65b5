"""A reap that is interrupted or cannot see everything must leave the expired
transaction for a later reap, never call it `failed` (rows left unrestored,
claims dropped, an admin's forced retry needed) nor `timed_out` over a partial
undo. What interrupts it here is no fault of the rows: the caller's own
statement_timeout, a deadlock with the owner's write racing the expiry, a row
lock held by a frozen backend, a caller reading with an older snapshot."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from .conftest import (
    audit_events,
    backend_pid,
    call,
    claims_of,
    expire,
    frozen,
    gate_closed,
    rows_text,
    sqlstate_of,
    tx_row,
    wait_until_waiting,
)

FIRST = ["(1,10,n1)", "(2,20,n2)", "(3,30,n3)", "(4,40,n4)", "(5,50,n5)"]


def _user(make_role: Any, name: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_role(name, member_of=("resilience_user",)), autocommit=True)


def _assert_reaped_in_full(conn: psycopg.Connection[Any], tx: Any) -> None:
    """A later explicit tx_reap finishes the job: timed_out, every row back,
    no claim left, a `timeout` audit row."""
    assert call(conn, "tx_reap") >= 1
    assert tx_row(conn, tx)[0] == "timed_out"
    assert rows_text(conn, "items") == FIRST
    assert claims_of(conn, tx) == 0
    assert audit_events(conn, tx)[-1] == "timeout"


def test_lazy_reap_cut_by_the_callers_statement_timeout_leaves_the_transaction_active(
    conn: psycopg.Connection[Any], items: str, make_role: Any
) -> None:
    # A restore that takes long (a slow user trigger, on row 5) meets the
    # statement timeout of whoever's call reaps lazily (Supabase: 8 s for
    # authenticated). The transaction reaped before it stays reaped.
    conn.execute(
        "create function slow() returns trigger language plpgsql as $$ begin"
        " if current_setting('resilience.restoring', true) <> '' and new.id = 5"
        " and exists (select from public.gate where armed) then perform pg_sleep(2); end if;"
        " return new; end $$;"
        "create trigger slow before update on items for each row execute function slow();"
    )
    owner, caller = _user(make_role, "b5_owner"), _user(make_role, "b5_caller")
    with owner, caller:
        quick = call(owner, "tx_begin")
        call(owner, "tx_execute", quick, "items", "update", {"v": 1}, {"id": 1})
        expire(conn, quick)
        tx = call(owner, "tx_begin")
        call(owner, "tx_execute", tx, "items", "update", {"v": 5}, {"id": 5})
        expire(conn, tx)  # expired after `quick`: reaped after it
        conn.execute("update gate set armed = true")
        caller.execute("set statement_timeout = '300ms'")
        call(caller, "tx_begin")  # the caller's own call goes through
        assert tx_row(conn, quick)[0] == "timed_out"
        assert audit_events(conn, quick)[-1] == "timeout"
        status, outcome = tx_row(conn, tx)
        # Not failed: the undo did not fail, the caller's time ran out.
        assert status == "active" and "reap_after" in outcome
        assert rows_text(conn, "items") == [*FIRST[:4], "(5,5,n5)"]
        assert claims_of(conn, tx) == 1
        assert sqlstate_of(caller.execute, "update items set v = 0 where id = 5") == "55P03"
        assert "conflict" not in audit_events(conn, tx)
        cleanup = conn.execute(
            "select detail ->> 'timed_out' from resilience.audit_log where event = 'cleanup'"
        ).fetchall()
        assert cleanup == [("1",)]
        conn.execute("update gate set armed = false")
        _assert_reaped_in_full(conn, tx)


def test_user_trigger_raising_57014_before_any_deadline_still_fails_the_reap(
    conn: psycopg.Connection[Any], items: str
) -> None:
    conn.execute(
        "create function cancel() returns trigger language plpgsql as $$ begin"
        " if current_setting('resilience.restoring', true) <> '' then"
        " raise exception using errcode = 'query_canceled'; end if; return new; end $$;"
        "create trigger cancel before update on items for each row execute function cancel();"
    )
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    expire(conn, tx)
    assert call(conn, "tx_reap") == 1
    status, outcome = tx_row(conn, tx)
    assert (status, outcome["sqlstate"]) == ("failed", "57014")
    assert audit_events(conn, tx)[-1] == "conflict"


def test_explicit_reap_deadlocked_by_the_owners_write_racing_expiry_is_left_for_later(
    conn: psycopg.Connection[Any], dsn: str, items: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    call(conn, "tx_execute", tx, "items", "update", {"v": 5}, {"id": 5})
    expire(conn, tx)
    results: dict[str, Any] = {}
    with gate_closed(dsn) as keeper, psycopg.connect(dsn, autocommit=True) as reaper:
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute("set deadlock_timeout = '1h'")  # the reaper detects it
            reaper_pid, writer_pid = backend_pid(reaper), backend_pid(writer)

            def reap() -> None:
                results["reaped"] = call(reaper, "tx_reap")

            def write() -> None:
                # The owner's call that was in flight when the timeout hit:
                # it updates row 1, then its capture waits for the reaper.
                with writer.transaction():
                    writer.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
                    results["write"] = sqlstate_of(
                        writer.execute, "update items set v = 7 where id = 1"
                    )

            reaping = threading.Thread(target=reap)
            reaping.start()
            wait_until_waiting(keeper, reaper_pid)  # undoing row 5, held at the gate
            writing = threading.Thread(target=write)
            writing.start()
            wait_until_waiting(keeper, writer_pid)  # holds row 1, waits for the reaper
            keeper.execute("select pg_advisory_unlock_all()")
            reaping.join(60)
            writing.join(60)
    assert results["write"] == "RZ003", tx_row(conn, tx)  # the write of an expired transaction
    status, outcome = tx_row(conn, tx)
    assert status == "active" and "reap_after" in outcome
    assert rows_text(conn, "items") == ["(1,1,n1)", *FIRST[1:4], "(5,5,n5)"]
    assert claims_of(conn, tx) == 2
    _assert_reaped_in_full(conn, tx)


def test_frozen_backend_holding_a_row_lock_delays_the_reap_never_fails_it(
    conn: psycopg.Connection[Any], dsn: str, items: str, make_role: Any
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    expire(conn, tx)
    caller = _user(make_role, "b5_caller")
    with caller, psycopg.connect(dsn) as holder:
        holder.execute("select from items where id = 1 for share")
        with frozen(backend_pid(holder)):
            # A lazy reap (any user's call) gives up on the lock at once.
            call(caller, "tx_begin")
            assert tx_row(conn, tx)[0] == "active"
            # So does an explicit reap under the caller's own lock_timeout,
            # or statement_timeout: left for later, not failed.
            with psycopg.connect(dsn, autocommit=True) as janitor:
                janitor.execute("set lock_timeout = '100ms'")
                assert call(janitor, "tx_reap") == 0
                janitor.execute("reset lock_timeout")
                janitor.execute("set statement_timeout = '100ms'")
                assert call(janitor, "tx_reap") == 0
            assert tx_row(conn, tx)[0] == "active"
            assert claims_of(conn, tx) == 1
            assert "conflict" not in audit_events(conn, tx)
        holder.rollback()
    _assert_reaped_in_full(conn, tx)


def test_lazy_reap_in_a_repeatable_read_call_never_reaps_with_its_old_snapshot(
    conn: psycopg.Connection[Any], dsn: str, items: str, make_role: Any
) -> None:
    owner = _user(make_role, "b5_owner")
    reader = psycopg.connect(make_role("b5_caller", member_of=("resilience_user",)))
    with owner, reader:
        tx = call(owner, "tx_begin", 60000)
        call(owner, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
        reader.execute("set transaction isolation level repeatable read")
        reader.execute("select 1")  # the reader's snapshot: one statement so far
        call(owner, "tx_execute", tx, "items", "update", {"v": 2}, {"id": 2})
        # The reader's snapshot must see the expiry: a real (short) timeout.
        conn.execute(
            "update resilience.transactions set expires_at = clock_timestamp() + interval '0.3 s'"
            " where id = %s",
            (tx,),
        )
        reader.rollback()
        reader.execute("set transaction isolation level repeatable read")
        reader.execute("select 1")
        call(owner, "tx_execute", tx, "items", "update", {"v": 3}, {"id": 3})
        while call(owner, "tx_status", tx)["expired"] is False:
            time.sleep(0.05)
        call(reader, "tx_begin")  # lazy reap, if any, with the old snapshot
        reader.commit()
    # Either left for a later reap or reaped in full; never a partial undo
    # called timed_out with a claim left behind.
    if tx_row(conn, tx)[0] == "active":
        _assert_reaped_in_full(conn, tx)
    assert tx_row(conn, tx)[0] == "timed_out"
    assert rows_text(conn, "items") == FIRST
    assert conn.execute("select count(*) from resilience._claims()").fetchone() == (0,)


@pytest.mark.xfail(
    strict=True,
    reason="tx_rollback/tx_reap at REPEATABLE READ undo only the statements their snapshot "
    "sees: success over a partial undo, claims left on a finished transaction",
)
@pytest.mark.parametrize("function", ["tx_rollback", "tx_reap"])
def test_explicit_undo_with_a_snapshot_older_than_the_last_statement_restores_everything(
    conn: psycopg.Connection[Any], dsn: str, items: str, function: str
) -> None:
    tx = call(conn, "tx_begin", 1000)
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    with psycopg.connect(dsn) as old:
        old.execute("set transaction isolation level repeatable read")
        old.execute("select 1")  # its snapshot, before the next statement
        call(conn, "tx_execute", tx, "items", "update", {"v": 2}, {"id": 2})
        if function == "tx_rollback":
            outcome = sqlstate_of(call, old, "tx_rollback", tx)
        else:
            while call(conn, "tx_status", tx)["expired"] is False:
                time.sleep(0.05)
            outcome = sqlstate_of(call, old, "tx_reap")
        old.commit()
    if outcome is None:  # it claimed success: then it must have restored all
        assert rows_text(conn, "items") == FIRST
        assert conn.execute("select count(*) from resilience._claims()").fetchone() == (0,)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_read_only_request_never_fails_because_an_expired_transaction_waits(
    conn: psycopg.Connection[Any], items: str, make_role: Any, method: str
) -> None:
    # PostgREST runs a POST to a STABLE function in a read-only transaction,
    # and calls db-pre-request (tx_pre_request) in it.
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "items", "update", {"v": 1}, {"id": 1})
    expire(conn, tx)
    request = psycopg.connect(make_role("b5_caller", member_of=("resilience_user",)))
    with request:
        request.execute("set transaction read only")
        request.execute("select set_config('request.method', %s, true)", (method,))
        request.execute("select resilience.tx_pre_request()")
        assert request.execute("select count(*) from items").fetchone() == (5,)
        request.commit()
    assert tx_row(conn, tx)[0] == "active"  # left for a read-write call
    _assert_reaped_in_full(conn, tx)
