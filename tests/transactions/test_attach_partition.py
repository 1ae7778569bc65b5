"""A managed table may not become a partition (ATTACH PARTITION) or an
inheritance child (ALTER TABLE ... INHERIT) of another table
(docs/transactions.md, "DDL on managed tables"). A statement on its new
parent fires the parent's statement triggers, not its own: its capture and
claim guard would be passed by. The DDL is refused with 55006, naming a
holder where a logical transaction holds claims on it, and also without
claims: a REPEATABLE READ snapshot may predate a claim, and unmanaging the
table on the way would drop images a transaction still needs.
unmanage_table first; a managed root then captures it like any partition."""

from __future__ import annotations

import json
import threading
import time
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

# A plain write to the row each claim holds.
PLAIN_WRITE_OF = {
    "update": "update events set payload = '2' where region = 'us' and id = 1",
    "lock": "update events set payload = '2' where region = 'us' and id = 1",
    "insert": "delete from events where region = 'us' and id = 9",
    "delete": "insert into events values ('us', 1, '{}')",
}


def managed(conn: psycopg.Connection[Any]) -> list[str]:
    statement = "select relation::text from resilience.managed_tables order by 1"
    return [r[0] for r in conn.execute(statement)]


def refusal(error: psycopg.Error | None, holder: str | None) -> dict[str, Any]:
    assert error is not None, "the DDL went through"
    assert error.sqlstate == "55006", error
    assert "unmanage_table" in (error.diag.message_hint or "")
    detail: dict[str, Any] = json.loads(error.diag.message_detail or "")
    assert detail["holder"] == holder
    if holder:
        assert holder in str(error)
    return detail


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
        detail = refusal(failure(other, ATTACH), tx)
        assert detail == {"table": "public.events", "parent": "public.everything", "holder": tx}
        # Still a table of its own, still guarded.
        assert conn.execute(
            "select count(*) from pg_inherits where inhrelid = 'events'::regclass"
        ).fetchone() == (0,)
        plain = failure(other, PLAIN_WRITE_OF[claim])
        assert plain is not None and plain.sqlstate == "55P03", plain
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_it_is_refused_without_claims_too_and_unmanage_table_first_lets_it_in(conn, dsn):
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    call(conn, "manage_table", "everything")
    refusal(failure(conn, ATTACH), None)
    assert managed(conn) == ["events", "everything"]
    call(conn, "unmanage_table", "events")
    conn.execute(ATTACH)
    # The managed root regenerated: its capture is on the new partitions.
    capture = conn.execute(
        "select capture_function from resilience.managed_tables"
        " where relation = 'everything'::regclass"
    ).fetchone()
    assert capture is not None
    for part in ("events", "events_eu", "events_us"):
        assert our_triggers(conn, part) == [
            "resilience_capture_delete",
            "resilience_capture_insert",
            "resilience_capture_update",
            "resilience_guard_truncate",
        ]
        assert conn.execute(
            "select bool_and(tgfoid = %s::regprocedure) from pg_trigger"
            " where tgrelid = %s::regclass and tgname like 'resilience_capture%%'",
            (capture[0], part),
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
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_a_repeatable_read_attach_whose_snapshot_predates_a_claim_is_refused(conn, dsn):
    """The claim commits after the ATTACH's snapshot was taken: no claim is
    seen, and the table is refused all the same, its images kept."""
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    before = rows(conn)
    with psycopg.connect(dsn) as other:
        other.execute("set transaction isolation level repeatable read")
        other.execute("select 1")
        tx = begin(conn)
        execute(conn, tx, "events", "lock", None, {"region": "us", "id": 1})
        refusal(failure(other, ATTACH), None)
        other.rollback()
    with psycopg.connect(dsn, autocommit=True) as plain:
        error = failure(plain, PLAIN_WRITE_OF["lock"])
        assert error is not None and error.sqlstate == "55P03", error
    call(conn, "tx_rollback", tx)
    assert rows(conn) == before


def test_an_attach_waiting_for_a_call_in_flight_sees_its_claim(conn, dsn):
    """A tx_execute call holds the table while the ATTACH waits for its lock;
    the claim it commits is named."""
    conn.execute(EVENTS)
    conn.execute(EVERYTHING)
    tx = begin(conn)
    outcome: list[psycopg.Error | None] = []
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as other:
        execute(writer, tx, "events", "update", {"payload": {"c": 1}}, {"region": "us", "id": 1})
        thread = threading.Thread(target=lambda: outcome.append(failure(other, ATTACH)))
        thread.start()
        time.sleep(0.3)
        writer.commit()
        thread.join(15)
    assert len(outcome) == 1
    refusal(outcome[0], tx)
    call(conn, "tx_rollback", tx)


SOLO = """
create table solo (region text, id integer, payload jsonb, primary key (region, id));
insert into solo values ('us', 1, '{}'), ('us', 2, '{}');
select resilience.manage_table('solo');
create table base (region text, id integer, payload jsonb);
"""


def test_a_managed_table_cannot_become_an_inheritance_child(conn, dsn):
    conn.execute(SOLO)
    tx = begin(conn)
    execute(conn, tx, "solo", "update", {"payload": {"c": 1}}, {"region": "us", "id": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        refusal(failure(other, "alter table solo inherit base"), tx)
        plain = failure(other, "update solo set payload = '2' where id = 1")
        assert plain is not None and plain.sqlstate == "55P03", plain
    call(conn, "tx_rollback", tx)
    refusal(failure(conn, "alter table solo inherit base"), None)
    call(conn, "unmanage_table", "solo")
    conn.execute("alter table solo inherit base")
    assert managed(conn) == []
    assert our_triggers(conn, "solo") == []


def test_a_new_partition_of_a_managed_table_is_not_refused(conn):
    conn.execute(EVENTS)
    tx = begin(conn)
    execute(conn, tx, "events", "update", {"payload": {"c": 1}}, {"region": "us", "id": 1})
    conn.execute("create table events_ca partition of events for values in ('ca')")
    conn.execute(
        "create table events_mx (region text not null, id integer not null, payload jsonb)"
    )
    conn.execute("alter table events attach partition events_mx for values in ('mx')")
    assert len(our_triggers(conn, "events_mx")) == 4
    call(conn, "tx_rollback", tx)
