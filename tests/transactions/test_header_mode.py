"""Header mode (issue 4, item 2), exactly as PostgREST runs a request: one
database transaction per request, `set local role authenticated`, the JWT
claims and the request headers set with set_config(..., true), then a plain
INSERT/UPDATE/DELETE. With header x-resilience-tx the write is captured into
that logical transaction."""

from __future__ import annotations

import psycopg
import pytest

from .conftest import begin_as, request, table_rows


def test_plain_writes_with_the_header_are_captured_and_roll_back(api):
    before = table_rows(api, "codes")
    tx = begin_as(api, "user-1")
    request(api, "user-1", "insert into codes values ('h', 'header')", tx)
    request(api, "user-1", "update codes set label = 'changed' where code = 'a'", tx)
    request(api, "user-1", "delete from codes where code = 'h'", tx)
    status = request(api, "user-1", "select resilience.tx_status(%s)", params=(tx,))[0][0]
    assert status["operations"] == 3 and status["owner_role"] == "authenticated"
    assert status["owner_sub"] == "user-1"
    events = api.execute(
        "select detail->>'operation' from resilience.audit_log"
        " where tx_id = %s and event = 'execute' order by id",
        (tx,),
    ).fetchall()
    assert events == [("insert",), ("update",), ("delete",)]
    request(api, "user-1", "select resilience.tx_rollback(%s)", params=(tx,))
    assert table_rows(api, "codes") == before


def test_header_writes_commit_like_any_other(api):
    tx = begin_as(api, "user-1")
    request(api, "user-1", "insert into codes values ('h', 'kept')", tx)
    request(api, "user-1", "select resilience.tx_commit(%s)", params=(tx,))
    assert api.execute("select label from codes where code = 'h'").fetchone() == ("kept",)


def test_header_naming_someone_elses_transaction_fails(api):
    tx = begin_as(api, "user-1")
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-2", "insert into codes values ('x', 'intruder')", tx)
    assert caught.value.sqlstate == "RZ001"
    assert api.execute("select count(*) from codes where code = 'x'").fetchone() == (0,)


@pytest.mark.parametrize(
    "header", ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "'; drop table codes; --"]
)
def test_header_naming_an_unknown_transaction_fails(api, header):
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-1", "update codes set label = 'x' where code = 'a'", header)
    assert caught.value.sqlstate == "RZ001"
    assert api.execute("select label from codes where code = 'a'").fetchone() == ("A",)


def test_header_naming_an_expired_transaction_fails(api):
    tx = begin_as(api, "user-1", timeout_ms=1)
    api.execute("select pg_sleep(0.01)")
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-1", "update codes set label = 'x' where code = 'a'", tx)
    assert caught.value.sqlstate == "RZ003"
    assert api.execute("select label from codes where code = 'a'").fetchone() == ("A",)


def test_header_naming_a_finished_transaction_fails(api):
    tx = begin_as(api, "user-1")
    request(api, "user-1", "select resilience.tx_commit(%s)", params=(tx,))
    with pytest.raises(psycopg.Error) as caught:
        request(api, "user-1", "delete from codes where code = 'a'", tx)
    assert caught.value.sqlstate == "RZ002"


def test_request_without_the_header_is_a_plain_write(api):
    request(api, "user-1", "update codes set label = 'plain' where code = 'a'")
    assert api.execute("select resilience._image_count()").fetchone() == (0,)
    assert api.execute("select label from codes where code = 'a'").fetchone() == ("plain",)
