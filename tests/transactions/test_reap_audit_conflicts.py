"""Timeouts (tx_reap, several reapers at once, retention purge), the audit
trail, rollback conflict detection with force, and ownership."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, table_rows


def expire_now(conn: psycopg.Connection[Any], count: int) -> list[str]:
    """``count`` transactions with one insert each, then all made expired at
    once (tx_begin reaps lazily, so they must not expire while we create them)."""
    txs = []
    for i in range(count):
        tx = begin(conn)
        execute(conn, tx, "codes", "insert", {"code": f"c{i}"})
        txs.append(tx)
    conn.execute(
        "update resilience.transactions set expires_at = started_at + interval '1 microsecond'"
        " where id = any(%s::uuid[])",
        (txs,),
    )
    return txs


def test_reap_rolls_back_expired_transactions_as_timed_out(app):
    keep = begin(app)
    execute(app, keep, "codes", "insert", {"code": "keep"})
    expire_now(app, 3)
    assert call(app, "tx_reap") == 3
    assert [r["code"] for r in table_rows(app, "codes")] == ["keep"]
    statuses = app.execute(
        "select status, count(*) from resilience.transactions group by 1 order by 1"
    ).fetchall()
    assert statuses == [("active", 1), ("timed_out", 3)]
    assert call(app, "tx_reap") == 0


def test_two_reapers_at_once_each_transaction_reaped_once(app, dsn):
    expire_now(app, 12)
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def reaper() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            counts.append(call(conn, "tx_reap", 100))

    threads = [threading.Thread(target=reaper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 12
    assert table_rows(app, "codes") == []
    timeouts = app.execute(
        "select count(*) from resilience.audit_log where event = 'timeout'"
    ).fetchone()
    assert timeouts == (12,)


def test_reaper_skips_a_transaction_another_reaper_holds(app, dsn):
    [tx] = expire_now(app, 1)
    with psycopg.connect(dsn) as holder:  # holds the row lock, like a reaper mid-way
        holder.execute("select 1 from resilience.transactions where id = %s for update", (tx,))
        assert call(app, "tx_reap") == 0  # SKIP LOCKED: no waiting
        holder.rollback()
    assert call(app, "tx_reap") == 1


def test_tx_begin_reaps_lazily(app):
    [tx] = expire_now(app, 1)
    begin(app)
    status = app.execute(
        "select status from resilience.transactions where id = %s", (tx,)
    ).fetchone()
    assert status == ("timed_out",)


def test_retention_purges_finished_transactions_images_and_old_audit(app):
    old = begin(app)
    execute(app, old, "codes", "insert", {"code": "x"})
    call(app, "tx_commit", old)
    recent = begin(app)
    call(app, "tx_commit", recent)
    app.execute("update resilience.settings set value = '1 hour' where name = 'retention'")
    app.execute(
        "update resilience.transactions set finished_at = now() - interval '2 hours',"
        " started_at = now() - interval '3 hours' where id = %s",
        (old,),
    )
    app.execute(
        "update resilience.audit_log set at = now() - interval '2 hours' where tx_id = %s", (old,)
    )
    call(app, "tx_reap")
    assert app.execute("select id::text from resilience.transactions").fetchall() == [(recent,)]
    assert app.execute("select resilience._image_count()").fetchone() == (0,)
    assert app.execute(
        "select count(*) from resilience.audit_log where tx_id = %s", (old,)
    ).fetchone() == (0,)
    cleanup = app.execute(
        "select detail from resilience.audit_log where event = 'cleanup'"
    ).fetchone()
    assert cleanup[0]["purged"]["transactions"] == 1


def test_audit_rows_for_every_event(app):
    tx = begin(app)
    execute(app, tx, "codes", "insert", [{"code": "a"}, {"code": "b"}])
    call(app, "tx_savepoint", tx, "sp")
    execute(app, tx, "codes", "delete", match={"code": "a"})
    call(app, "tx_rollback_to", tx, "sp")
    call(app, "tx_commit", tx)
    other = begin(app)
    call(app, "tx_rollback", other, "changed my mind")
    rows = app.execute(
        "select event, actor_role, detail from resilience.audit_log"
        " where tx_id in (%s, %s) order by id",
        (tx, other),
    ).fetchall()
    assert [r[0] for r in rows] == [
        "begin",
        "execute",
        "savepoint",
        "execute",
        "rollback",
        "commit",
        "begin",
        "rollback",
    ]
    assert {r[1] for r in rows} == {"postgres"}
    insert = rows[1][2]
    assert (
        insert["table"] == "public.codes"
        and insert["operation"] == "insert"
        and insert["rows"] == 2
    )
    assert insert["duration_ms"] >= 0
    assert rows[5][2]["operations"] == 1 and rows[5][2]["duration_ms"] >= 0
    assert rows[7][2]["reason"] == "changed my mind"


def test_rollback_conflict_is_detected_reported_and_changes_nothing(app):
    app.execute("insert into codes values ('a', 'A'), ('b', 'B')")
    tx = begin(app)
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "a"})
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "b"})
    # A write that bypasses the guards (here: triggers disabled by a superuser).
    app.execute("set session_replication_role = replica")
    app.execute("update codes set label = 'bypass' where code = 'a'")
    app.execute("set session_replication_role = origin")
    with pytest.raises(psycopg.Error) as caught:
        call(app, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    assert '"code": "a"' in (caught.value.diag.message_detail or "")
    assert app.execute("select code, label from codes order by 1").fetchall() == [
        ("a", "bypass"),
        ("b", "tx"),
    ]
    assert call(app, "tx_status", tx)["status"] == "active"
    forced = call(app, "tx_rollback", tx, None, True)
    assert forced["status"] == "rolled_back" and forced["conflicts"][0]["key"] == {"code": "a"}
    assert app.execute("select code, label from codes order by 1").fetchall() == [
        ("a", "A"),
        ("b", "B"),
    ]
    assert app.execute(
        "select count(*) from resilience.audit_log where event = 'conflict'"
    ).fetchone() == (1,)


def test_reaper_marks_a_conflicting_transaction_failed_and_audits_it(app):
    app.execute("insert into codes values ('a', 'A')")
    tx = begin(app, timeout_ms=50)
    execute(app, tx, "codes", "update", {"label": "tx"}, {"code": "a"})
    app.execute(
        "set session_replication_role = replica; update codes set label = 'bypass'; "
        "set session_replication_role = origin"
    )
    time.sleep(0.1)
    assert call(app, "tx_reap") == 1
    assert app.execute("select status from resilience.transactions").fetchone() == ("failed",)
    assert app.execute("select label from codes").fetchone() == ("bypass",)
    assert app.execute("select count(*) from resilience._claims()").fetchone() == (0,)
    assert app.execute(
        "select count(*) from resilience.audit_log where event = 'conflict'"
    ).fetchone() == (1,)


def test_non_owner_gets_not_found_and_admin_may_roll_back(app, make_role):
    app.execute("grant all on codes to public")
    alice = psycopg.connect(make_role("tx_alice", member_of=("resilience_user",)), autocommit=True)
    mallory = psycopg.connect(
        make_role("tx_mallory", member_of=("resilience_user",)), autocommit=True
    )
    boss = psycopg.connect(make_role("tx_boss", member_of=("resilience_admin",)), autocommit=True)
    with alice, mallory, boss:
        tx = begin(alice)
        execute(alice, tx, "codes", "insert", {"code": "alice"})
        for function, args in [
            ("tx_status", ()),
            ("tx_commit", ()),
            ("tx_rollback", ()),
            ("tx_savepoint", ("sp",)),
        ]:
            with pytest.raises(psycopg.Error) as caught:
                call(mallory, function, tx, *args)
            assert caught.value.sqlstate == "RZ001", function
        with pytest.raises(psycopg.Error) as caught:
            execute(mallory, tx, "codes", "insert", {"code": "mallory"})
        assert caught.value.sqlstate == "RZ001"
        assert mallory.execute("select count(*) from resilience.transactions").fetchone() == (0,)
        assert call(boss, "tx_rollback", tx)["status"] == "rolled_back"
        assert table_rows(app, "codes") == []
