"""Expired holders meet plain writes (issue 4, item 1): "a claim held by an
expired transaction is resolved by rolling that transaction back, after which
the write goes through".

A trigger on the write itself cannot roll the holder back (PostgreSQL refuses
a write to a row that an earlier step of the same statement rewrote, 27000),
so the roll-back must happen in an earlier statement of the write's database
transaction. Logical transactions do it in tx_execute; PostgREST requests do
it in resilience.tx_pre_request, PostgREST's db-pre-request hook, which runs
after the request's settings and before its statement. Each request here runs
the way PostgREST runs one (see conftest.request)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from .conftest import begin_as, request

pytestmark = pytest.mark.usefixtures("api")


def abandon(api: psycopg.Connection[Any], sub: str = "user-1") -> str:
    """A logical transaction of ``sub`` that claimed code 'a' (label
    'abandoned') and then expired without commit or rollback."""
    holder = begin_as(api, sub, timeout_ms=100)
    request(api, sub, "update codes set label = 'abandoned' where code = 'a'", holder)
    time.sleep(0.2)
    return holder


def status_of(api: psycopg.Connection[Any], tx: str) -> str:
    row = api.execute("select status from resilience.transactions where id = %s", (tx,)).fetchone()
    assert row is not None
    return str(row[0])


def label_of_a(api: psycopg.Connection[Any]) -> str:
    row = api.execute("select label from codes where code = 'a'").fetchone()
    assert row is not None
    return str(row[0])


def test_plain_write_request_rolls_the_expired_holder_back_then_goes_through(api):
    holder = abandon(api)
    request(
        api,
        "user-2",
        "update codes set label = label || '+plain' where code = 'a'",
        pre_request=True,
    )
    # The write applied to the restored row, not to the holder's 'abandoned'.
    assert label_of_a(api) == "A+plain"
    assert status_of(api, holder) == "timed_out"
    assert api.execute("select count(*) from resilience._claims()").fetchone() == (0,)
    timeouts = api.execute(
        "select count(*) from resilience.audit_log where tx_id = %s and event = 'timeout'",
        (holder,),
    ).fetchone()
    assert timeouts == (1,)


def test_plain_insert_request_over_a_key_the_expired_holder_deleted(api):
    holder = begin_as(api, "user-1", timeout_ms=100)
    request(api, "user-1", "delete from codes where code = 'a'", holder)
    time.sleep(0.2)
    # The holder's rollback re-inserts 'a' first: the insert then meets the
    # primary key like any insert of an existing key would.
    with pytest.raises(psycopg.errors.UniqueViolation):
        request(api, "user-2", "insert into codes values ('a', 'new')", pre_request=True)
    request(api, "user-2", "update codes set label = 'new' where code = 'a'", pre_request=True)
    assert label_of_a(api) == "new"
    assert status_of(api, holder) == "timed_out"


def test_without_the_hook_the_write_fails_at_once_naming_the_remedy(api):
    holder = abandon(api)
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-2", "update codes set label = 'plain' where code = 'a'")
    assert time.monotonic() - started < 5
    error = caught.value
    assert error.sqlstate == "55P03"
    assert holder in (error.diag.message_primary or "")
    assert "expired" in (error.diag.message_primary or "")
    assert "tx_pre_request" in (error.diag.message_hint or "")
    assert status_of(api, holder) == "active"


def test_header_request_naming_the_expired_transaction_still_fails(api):
    holder = abandon(api)
    with pytest.raises(psycopg.Error) as caught:
        request(
            api,
            "user-1",
            "update codes set label = 'late' where code = 'a'",
            holder,
            pre_request=True,
        )
    # Reaped by the hook, so the write meets a timed-out transaction. The
    # request failed as a whole, so its reap was undone with it.
    assert caught.value.sqlstate in ("RZ002", "RZ003")
    assert label_of_a(api) == "abandoned"
    assert status_of(api, holder) == "active"


def test_read_requests_do_not_reap(api):
    holder = abandon(api)
    rows = request(api, "user-2", "select label from codes", method="GET", pre_request=True)
    assert rows == [("abandoned",)]
    assert status_of(api, holder) == "active"


def test_hook_with_nothing_expired_changes_nothing(api):
    tx = begin_as(api, "user-1")
    request(api, "user-1", "update codes set label = 'mine' where code = 'a'", tx)
    request(api, "user-2", "insert into codes values ('z', 'other')", pre_request=True)
    assert status_of(api, tx) == "active"
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-2", "update codes set label = 'x' where code = 'a'", pre_request=True)
    assert caught.value.sqlstate == "55P03"


def test_hook_is_exposed_and_granted_like_the_rest_of_the_api(api):
    granted = api.execute(
        "select has_function_privilege('authenticated', 'resilience.tx_pre_request()', 'execute'),"
        " has_function_privilege('anon', 'resilience.tx_pre_request()', 'execute')"
    ).fetchone()
    assert granted == (True, False)


def test_two_requests_meeting_one_expired_holder_both_go_through(api, dsn):
    """Interleaving: request A reaps the holder and writes, uncommitted;
    request B (its reap skips the holder A has locked) waits on A's row lock,
    not on the logical transaction, then writes on top of A's committed row."""
    holder = abandon(api)
    with psycopg.connect(dsn) as a, psycopg.connect(dsn, autocommit=True) as b:
        a.execute("set role authenticated")
        a.execute(
            "select set_config('request.jwt.claims', '{\"sub\": \"user-2\"}', true),"
            " set_config('request.method', 'PATCH', true),"
            " set_config('request.headers', '{}', true)"
        )
        a.execute("select resilience.tx_pre_request()")
        a.execute("update codes set label = label || '+A' where code = 'a'")
        failures: list[BaseException] = []

        def request_b() -> None:
            try:
                request(
                    b,
                    "user-3",
                    "update codes set label = label || '+B' where code = 'a'",
                    pre_request=True,
                )
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)

        thread = threading.Thread(target=request_b)
        thread.start()
        pid = b.info.backend_pid
        deadline = time.monotonic() + 10
        waiting = None
        while time.monotonic() < deadline:
            waiting = api.execute(
                "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if waiting == ("Lock",):
                break
            time.sleep(0.02)
        assert waiting == ("Lock",), "request B should wait for A's row lock"
        a.commit()
        thread.join(10)
        assert not thread.is_alive()
        assert failures == []
    assert label_of_a(api) == "A+A+B"
    assert status_of(api, holder) == "timed_out"
    assert api.execute("select count(*) from resilience._claims()").fetchone() == (0,)
