"""Timeouts: tx_begin's timeout argument, expiry in the middle of a call, the
reaper's `timed_out`, and calls on an expired transaction (RZ003)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg

from breakit10_lifecycle.support import audit, call, clients, connect, expire, rows, sqlstate


def _table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "create table slow (id int primary key, v int not null);"
        "insert into slow values (1, 0), (2, 0);"
        "create function slow_down() returns trigger language plpgsql as $$"
        " begin if new.v = 99 then perform pg_sleep(1.5); end if; return new; end $$;"
        "create trigger slow_down before update on slow for each row execute function slow_down();"
        "select resilience.manage_table('slow');"
        "grant select, insert, update, delete on slow to resilience_user;"
    )


def test_tx_begin_timeout_bounds(conn, make_role):
    """A user would see a transaction begin with a timeout of 0, a negative
    one or one past max_timeout_ms (expiring at once, or never), or NULL not
    mean the default 30 s, or a SQLSTATE other than 22023."""
    dsns = clients(make_role, conn)
    with connect(dsns["lc_alice"]) as alice:
        for bad in (0, -1, -2147483648, 2147483647, 86400001):
            with sqlstate("22023"):
                call(alice, "select resilience.tx_begin(%s)", bad)
        with sqlstate("22023"):
            call(alice, "select resilience.tx_begin(1000, %s)", "l" * 1001)
        for timeout, seconds in ((None, 30.0), (1, 0.001), (86400000, 86400.0)):
            tx = call(alice, "select resilience.tx_begin(%s)", timeout)
            status = call(alice, "select resilience.tx_status(%s)", tx)
            span = call(
                alice,
                "select extract(epoch from %s::timestamptz - %s::timestamptz)::float8",
                status["expires_at"],
                status["started_at"],
            )
            assert abs(span - seconds) < 1e-3, (timeout, span)
            begin = [a for a in audit(conn, tx) if a[0] == "begin"]
            assert begin[0][3]["timeout_ms"] == (timeout or 30000)
        # The 1 ms one expired at once: the next tx_begin reaped it (or this one).
        call(alice, "select resilience.tx_reap()")
        assert (
            call(conn, "select count(*) from resilience.transactions where status = 'active'") == 2
        )


def test_expiry_during_a_long_tx_execute(conn, make_role):
    """A user would see a write whose call outlived the transaction's timeout
    kept (and never undone), an `execute` audit row for it, or the reaper
    wait for the call / fail while it runs."""
    dsns = clients(make_role, conn)
    _table(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin(300)")
        reaped: list[int] = []

        def reap_meanwhile() -> None:
            time.sleep(0.6)  # past expiry, while the call sleeps in its trigger
            with connect(dsns["lc_bob"]) as reaper:
                reaped.append(call(reaper, "select resilience.tx_reap()"))

        reaper = threading.Thread(target=reap_meanwhile)
        reaper.start()
        with sqlstate("RZ003"):
            call(
                alice,
                "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 99}', '{\"id\": 1}')",
                tx,
            )
        reaper.join(30)
        assert not reaper.is_alive()
        assert rows(conn, "slow") == ["(1,0)", "(2,0)"]
        reaped.append(call(bob, "select resilience.tx_reap()"))
        assert sum(reaped) == 1, reaped
        status = call(alice, "select resilience.tx_status(%s)", tx)
        assert status["status"] == "timed_out" and status["operations"] == 0
        assert [a[0] for a in audit(conn, tx)] == ["begin", "timeout"]
        # Every call on it now: RZ003 (rollback is harmless and says timed_out).
        for statement in (
            "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 1}', '{\"id\": 2}')",
            "select resilience.tx_commit(%s)",
            "select resilience.tx_savepoint(%s, 'sp')",
        ):
            with sqlstate("RZ003"):
                call(alice, statement, tx)
        assert call(alice, "select resilience.tx_rollback(%s)", tx)["status"] == "timed_out"
        assert [a[0] for a in audit(conn, tx)] == ["begin", "timeout"]


def test_reaped_transaction_is_restored_and_released(conn, make_role):
    """A user would see an expired transaction's rows stay written or
    claimed after tx_reap, a status other than `timed_out`, or the `timeout`
    audit row attributed to whoever happened to reap."""
    dsns = clients(make_role, conn)
    _table(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin(60000)")
        call(
            alice,
            "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 5}', '{\"id\": 1}')",
            tx,
        )
        call(alice, "select resilience.tx_savepoint(%s, 'sp')", tx)
        call(
            alice, "select resilience.tx_execute(%s, 'slow', 'insert', '{\"id\": 3, \"v\": 3}')", tx
        )
        call(alice, "select resilience.tx_execute(%s, 'slow', 'delete', null, '{\"id\": 2}')", tx)
        expire(conn, tx)
        # Bob's write to a row Alice holds: the lazy reap in his tx_execute goes first.
        mine = call(bob, "select resilience.tx_begin()")
        call(
            bob,
            "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 7}', '{\"id\": 1}')",
            mine,
        )
        call(bob, "select resilience.tx_commit(%s)", mine)
        assert rows(conn, "slow") == ["(1,7)", "(2,0)"]
        status = call(alice, "select resilience.tx_status(%s)", tx)
        assert status["status"] == "timed_out" and status["claims"] == 0
        assert status["outcome"]["reason"] == "timeout"
        timeout = [a for a in audit(conn, tx) if a[0] == "timeout"]
        assert len(timeout) == 1 and timeout[0][1:3] == ("lc_alice", None)
        assert timeout[0][3]["restored_rows"] == 3
        assert call(alice, "select count(*) from resilience.audit_log where event = 'timeout'") == 1
        assert call(bob, "select count(*) from resilience.audit_log where tx_id = %s", tx) == 0


def test_lazy_reap_in_a_header_mode_request_is_not_captured_into_it(conn, make_role):
    """A user writing with the x-resilience-tx header would see another
    role's expired transaction, reaped by the request's tx_pre_request, have
    its undo captured into their own transaction (claims, statements, or
    the undo undone again by their rollback)."""
    dsns = clients(make_role, conn)
    _table(conn)
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        expired = call(alice, "select resilience.tx_begin(60000)")
        call(
            alice,
            "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 5}', '{\"id\": 1}')",
            expired,
        )
        call(
            alice,
            "select resilience.tx_execute(%s, 'slow', 'insert', '{\"id\": 3, \"v\": 3}')",
            expired,
        )
        expire(conn, expired)
        mine = call(bob, "select resilience.tx_begin()")
        with bob.transaction():
            bob.execute(
                "select set_config('request.headers', %s, true),"
                " set_config('request.method', 'PATCH', true)",
                (json.dumps({"x-resilience-tx": str(mine)}),),
            )
            bob.execute("select resilience.tx_pre_request()")
            bob.execute("update slow set v = 8 where id = 2")
        assert rows(conn, "slow") == ["(1,0)", "(2,8)"]
        status = call(bob, "select resilience.tx_status(%s)", mine)
        assert (status["operations"], status["rows"], status["claims"]) == (1, 1, 1), status
        call(bob, "select resilience.tx_rollback(%s)", mine)
        assert rows(conn, "slow") == ["(1,0)", "(2,0)"]
        assert call(alice, "select resilience.tx_status(%s)", expired)["status"] == "timed_out"


def test_expiry_after_the_capture_of_a_long_call(conn, make_role):
    """A user would see a write that was captured before the deadline but
    whose call ended after it either lost (not undone by the reaper), or
    committed by a tx_commit after the deadline."""
    dsns = clients(make_role, conn)
    _table(conn)
    conn.execute(
        "create function slow_after() returns trigger language plpgsql as $$"
        " begin perform pg_sleep(1); return null; end $$;"
        # Fires after resilience_capture_update (triggers fire by name).
        "create trigger zz_slow_after after update on slow"
        " for each statement execute function slow_after();"
    )
    with connect(dsns["lc_alice"]) as alice, connect(dsns["lc_bob"]) as bob:
        tx = call(alice, "select resilience.tx_begin(400)")
        try:
            call(
                alice,
                "select resilience.tx_execute(%s, 'slow', 'update', '{\"v\": 3}', '{\"id\": 1}')",
                tx,
            )
        except psycopg.Error as error:
            # A machine slow enough to expire it before the capture: the RZ003 path.
            assert error.sqlstate == "RZ003"
            assert rows(conn, "slow") == ["(1,0)", "(2,0)"]
            return
        with sqlstate("RZ003"):
            call(alice, "select resilience.tx_commit(%s)", tx)
        assert call(bob, "select resilience.tx_reap()") == 1
        assert rows(conn, "slow") == ["(1,0)", "(2,0)"]
        assert call(alice, "select resilience.tx_status(%s)", tx)["status"] == "timed_out"
