"""Retention: finished transactions, their journal, kept images and old
audit rows are purged after the `retention` setting; failed ones keep their
images until then; each purge leaves a `cleanup` audit row."""

from __future__ import annotations

from typing import Any

import psycopg

from breakit10_lifecycle.support import audit, call, clients, connect, expire


def _age(conn: psycopg.Connection[Any], tx: Any, hours: int) -> None:
    """As if the transaction had finished `hours` ago (its audit rows too)."""
    conn.execute(
        "update resilience.transactions set started_at = started_at - make_interval(hours => %s),"
        " expires_at = expires_at - make_interval(hours => %s),"
        " finished_at = finished_at - make_interval(hours => %s) where id = %s",
        (hours, hours, hours, tx),
    )
    conn.execute(
        "update resilience.audit_log set at = at - make_interval(hours => %s) where tx_id = %s",
        (hours, tx),
    )


def _image_rows(conn: psycopg.Connection[Any], tx: Any) -> int:
    return call(conn, "select count(*) from resilience.tx_images(%s)", tx)


def test_finished_transactions_are_purged_after_retention(conn, make_role):
    """A user would see finished transactions, their journal, savepoints,
    a failed one's images or old audit rows kept past `retention` (the
    package's tables growing forever), or something purged too early: an
    active transaction, a recent one, a failed one's images within
    retention; or no `cleanup` audit row saying what went."""
    dsns = clients(make_role, conn)
    conn.execute(
        "create table acct (id int primary key, v int not null);"
        "insert into acct select g, 0 from generate_series(1, 9) g;"
        "select resilience.manage_table('acct');"
        "grant select, insert, update, delete on acct to resilience_user;"
        "update resilience.settings set value = '1 hour' where name = 'retention';"
    )
    with connect(dsns["lc_alice"]) as alice:

        def write(row: int, savepoint: bool = False) -> Any:
            tx = call(alice, "select resilience.tx_begin(60000)")
            if savepoint:
                call(alice, "select resilience.tx_savepoint(%s, 'sp')", tx)
            call(
                alice,
                "select resilience.tx_execute(%s, 'acct', 'update', '{\"v\": 1}', %s)",
                tx,
                f'{{"id": {row}}}',
            )
            return tx

        committed = write(1, savepoint=True)
        call(alice, "select resilience.tx_commit(%s)", committed)
        rolled_back = write(2)
        call(alice, "select resilience.tx_rollback(%s)", rolled_back)
        timed_out = write(3)
        failed_old = write(4)
        failed_new = write(5)
        recent = write(6)
        call(alice, "select resilience.tx_commit(%s)", recent)
        active = write(7)
        conn.execute("set session_replication_role = replica")
        conn.execute("update acct set v = 2 where id in (4, 5)")  # the undo of both must fail
        conn.execute("set session_replication_role = origin")
        for tx in (timed_out, failed_old, failed_new):
            expire(conn, tx)
        call(conn, "select resilience.tx_reap()")
        assert call(conn, "select resilience.tx_status(%s)", failed_old)["status"] == "failed"
        assert _image_rows(conn, failed_old) == 1 and _image_rows(conn, failed_new) == 1
        old = (committed, rolled_back, timed_out, failed_old)
        for tx in old:
            _age(conn, tx, 2)
        before = call(conn, "select count(*) from resilience.audit_log")
        old_audit = call(
            conn, "select count(*) from resilience.audit_log where at < now() - interval '1 hour'"
        )
        assert old_audit > 0

        assert call(conn, "select resilience.tx_reap()") == 0
        for tx in old:
            assert call(conn, "select count(*) from resilience.transactions where id = %s", tx) == 0
            assert (
                call(conn, "select count(*) from resilience.tx_statements where tx_id = %s", tx)
                == 0
            )
            assert (
                call(conn, "select count(*) from resilience.savepoints where tx_id = %s", tx) == 0
            )
            assert audit(conn, tx) == []
            assert _image_rows(conn, tx) == 0
        assert (
            call(
                conn,
                "select count(*) from resilience._img_{}".format(
                    call(conn, "select 'acct'::regclass::oid")
                ),
            )
            == 2
        )  # failed_new's, active's
        for tx, status in ((failed_new, "failed"), (recent, "committed"), (active, "active")):
            assert call(conn, "select resilience.tx_status(%s)", tx)["status"] == status
        assert _image_rows(conn, failed_new) == 1
        cleanup = call(
            conn,
            "select detail from resilience.audit_log where event = 'cleanup'"
            " order by id desc limit 1",
        )
        assert cleanup["purged"] == {"transactions": 4, "audit_rows": old_audit}, cleanup
        assert call(conn, "select count(*) from resilience.audit_log") == before - old_audit + 1


def test_retention_is_applied_without_a_janitor(conn, make_role):
    """A user without pg_cron or the Janitor (tx_reap is 'called lazily by
    tx_begin', docs/reference.md) would see finished transactions and audit
    rows past retention never purged, as long as no transaction expires."""
    dsns = clients(make_role, conn)
    conn.execute("update resilience.settings set value = '1 hour' where name = 'retention'")
    with connect(dsns["lc_alice"]) as alice:
        old = call(alice, "select resilience.tx_begin()")
        call(alice, "select resilience.tx_commit(%s)", old)
        _age(conn, old, 2)
        for _ in range(3):
            tx = call(alice, "select resilience.tx_begin()")
            call(alice, "select resilience.tx_commit(%s)", tx)
        assert call(conn, "select count(*) from resilience.transactions where id = %s", old) == 0


def test_a_bad_retention_setting_fails_no_call(conn, make_role):
    """A user would see every tx_begin fail because an operator wrote a
    retention setting that is no interval."""
    dsns = clients(make_role, conn)
    conn.execute("update resilience.settings set value = 'forever' where name = 'retention'")
    with connect(dsns["lc_alice"]) as alice:
        tx = call(alice, "select resilience.tx_begin()")
        call(alice, "select resilience.tx_commit(%s)", tx)
