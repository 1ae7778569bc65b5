"""A managed table that becomes a partition (ATTACH PARTITION) or an
inheritance child (ALTER TABLE ... INHERIT) of another table
(docs/transactions.md, "DDL on managed tables"). A statement on its new
parent fires the parent's statement triggers, not its own: its capture and
claim guard would be passed by. So, while a logical transaction holds
claims on it, the DDL is refused with 55006 naming a holder (as
unmanage_table and DETACH are); otherwise the table leaves the registry, a
warning names the table to manage, and a managed new root captures it like
any partition."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute
from .test_detach_partition import CLAIMS, EVENTS, failure, our_triggers, rows

EVERYTHING = """
create table everything (region text, id integer, payload jsonb, primary key (region, id))
    partition by list (region);
create table everything_ca partition of everything for values in ('ca');
insert into everything values ('ca', 1, '{}');
"""
ATTACH = "alter table everything attach partition events for values in ('eu', 'us')"


def warnings_of(conn: psycopg.Connection[Any]) -> list[str]:
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    return seen


def managed(conn: psycopg.Connection[Any]) -> list[str]:
    statement = "select relation::text from resilience.managed_tables order by 1"
    return [r[0] for r in conn.execute(statement)]


# A plain write to the row each claim holds.
PLAIN_WRITE_OF = {
    "update": "update events set payload = '2' where region = 'us' and id = 1",
    "lock": "update events set payload = '2' where region = 'us' and id = 1",
    "insert": "delete from events where region = 'us' and id = 9",
    "delete": "insert into events values ('us', 1, '{}')",
}


@pytest.mark.parametrize("root_managed", [False, True], ids=["root unmanaged", "root managed"])
@pytest.mark.parametrize("claim", ["update", "insert", "delete", "lock"])
def test_a_managed_table_holding_claims_cannot_become_a_partition(conn, dsn, claim, root_managed):
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    if root_managed:
        call(conn, "manage_table", "everything")
    before = rows(conn)
    tx = begin(conn)
    execute(conn, tx, "events", *CLAIMS[claim])
    with psycopg.connect(dsn, autocommit=True) as other:
        error = failure(other, ATTACH)
        assert error is not None and error.sqlstate == "55006", error
        assert tx in str(error)
        detail = json.loads(error.diag.message_detail or "")
        assert detail == {"table": "public.events", "parent": "public.everything", "holder": tx}
        # Still a table of its own, still guarded.
        assert conn.execute(
            "select count(*) from pg_inherits where inhrelid = 'events'::regclass"
        ).fetchone() == (0,)
        plain = failure(other, PLAIN_WRITE_OF[claim])
        assert plain is not None and plain.sqlstate == "55P03", plain
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_without_claims_it_leaves_the_registry_and_a_managed_root_captures_it(conn, dsn):
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    call(conn, "manage_table", "everything")
    # A transaction that ended holds nothing.
    done = begin(conn)
    execute(conn, done, "events", "update", {"payload": {"c": 1}}, {"region": "us", "id": 1})
    call(conn, "tx_commit", done)
    seen = warnings_of(conn)
    conn.execute(ATTACH)
    assert any("events is no longer managed" in m and "everything" in m for m in seen), seen
    assert managed(conn) == ["everything"]
    capture = conn.execute(
        "select capture_function::text from resilience.managed_tables"
        " where relation = 'everything'::regclass"
    ).fetchone()
    for part in ("events", "events_eu", "events_us"):
        assert our_triggers(conn, part) == [
            "resilience_capture_delete",
            "resilience_capture_insert",
            "resilience_capture_update",
            "resilience_guard_truncate",
        ]
        assert conn.execute(
            "select bool_and(tgfoid::regproc::text = %s) from pg_trigger"
            " where tgrelid = %s::regclass and tgname like 'resilience_capture%%'",
            (capture[0].removesuffix("()") if capture else None, part),
        ).fetchone() == (True,)
    before = rows(conn)
    tx = begin(conn)
    execute(conn, tx, "everything", "update", {"payload": {"c": 2}}, {"region": "us", "id": 1})
    execute(conn, tx, "everything", "delete", None, {"region": "eu", "id": 2})
    with psycopg.connect(dsn, autocommit=True) as other:
        plain = failure(other, "update events_us set payload = '3' where id = 1")
        assert plain is not None and plain.sqlstate == "55P03", plain
        detached = failure(other, "alter table everything detach partition events")
        assert detached is not None and detached.sqlstate == "55006", detached
    # The table itself is no longer managed on its own: a partition.
    with pytest.raises(psycopg.Error) as raised:
        execute(conn, tx, "events", "update", {"payload": {"c": 4}}, {"region": "us", "id": 2})
    assert raised.value.sqlstate == "22023"
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_without_claims_under_an_unmanaged_root_it_is_a_plain_partition(conn):
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    seen = warnings_of(conn)
    conn.execute(ATTACH)
    assert any("manage_table('public.everything')" in m for m in seen), seen
    assert managed(conn) == []
    for part in ("events", "events_eu", "events_us"):
        assert our_triggers(conn, part) == []
    # manage_table of the root takes it over, with what it holds.
    call(conn, "manage_table", "everything")
    tx = begin(conn)
    before = conn.execute("select t::text from everything as t order by 1").fetchall()
    execute(conn, tx, "everything", "delete", None, {"region": "us", "id": 2})
    call(conn, "tx_rollback", tx)
    assert conn.execute("select t::text from everything as t order by 1").fetchall() == before


SOLO = """
create table solo (region text, id integer, payload jsonb, primary key (region, id));
insert into solo values ('us', 1, '{}'), ('us', 2, '{}');
select resilience.manage_table('solo');
create table base (region text, id integer, payload jsonb);
"""


def test_a_managed_table_holding_claims_cannot_become_an_inheritance_child(conn, dsn):
    conn.execute(SOLO)
    tx = begin(conn)
    execute(conn, tx, "solo", "update", {"payload": {"c": 1}}, {"region": "us", "id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        error = failure(other, "alter table solo inherit base")
        assert error is not None and error.sqlstate == "55006", error
        assert tx in str(error)
        # A write through the parent would not have been guarded: refused.
        plain = failure(other, "update solo set payload = '2' where id = 1")
        assert plain is not None and plain.sqlstate == "55P03", plain
    call(conn, "tx_rollback", tx)
    seen = warnings_of(conn)
    conn.execute("alter table solo inherit base")
    assert any("solo is no longer managed" in m for m in seen), seen
    assert managed(conn) == []
    assert our_triggers(conn, "solo") == []
