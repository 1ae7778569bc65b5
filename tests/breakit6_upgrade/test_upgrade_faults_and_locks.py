"""The install is one transaction (README "Install": all or nothing): killed
midway, or stopped by a lock it may not wait for, it leaves the previous
release fully working. And installing again takes no lock on the app's
managed tables, so an app's open transaction never stalls it (nor the
app's readers queued behind it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgresilience import installer

APP = """
create table acct (id int primary key, bal int not null);
insert into acct values (1, 100), (2, 200);
select resilience.manage_table('acct');
"""
PARTITIONED = """
create table events (id int, day int, body text, primary key (id, day)) partition by range (day);
create table events_1 partition of events for values from (1) to (10);
create table events_2 partition of events for values from (10) to (20);
insert into events values (1, 1, 'a'), (2, 15, 'b');
select resilience.manage_table('events');
"""
# Long enough for any lock the install should take; what the install must not
# wait for (the app's transaction below) it would wait for forever.
LOCK_TIMEOUT = "-c lock_timeout=2s"


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def _waiting_installer(conn: psycopg.Connection[Any], exclude: int) -> int:
    """The pid of the install's backend once it waits on a lock."""
    for _ in range(600):
        row = conn.execute(
            "select pid from pg_stat_activity where datname = current_database()"
            " and wait_event_type = 'Lock' and pid <> %s",
            (exclude,),
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    pytest.fail("the install never waited on the app's lock")


def test_reinstall_takes_no_lock_on_managed_tables_the_app_has_open(dsn, conn):
    conn.execute(APP + PARTITIONED)
    triggers = (
        "select oid, tgrelid::regclass::text, tgname from pg_trigger"
        " where tgname ~ '^resilience_' order by 1"
    )
    before = conn.execute(triggers).fetchall()
    assert len(before) == 16  # 4 on acct, events and each partition
    with psycopg.connect(dsn) as app:
        # The app's own long transaction: plain writes to both managed tables.
        app.execute("update acct set bal = 101 where id = 1")
        app.execute("update events set body = 'x' where id = 2")

        installer.install(make_conninfo(dsn, options=LOCK_TIMEOUT))

        # Not dropped and re-created (ACCESS EXCLUSIVE), nor left behind
        # (a regeneration that failed on the lock marks the table for RZ007).
        assert conn.execute(triggers).fetchall() == before
        assert _one(conn, "select count(*) from resilience.managed_tables where shape is null") == 0
        app.commit()
    tx = _one(conn, "select resilience.tx_begin(60000, 'after')")
    conn.execute("select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 2}')", (tx,))
    conn.execute(
        "select resilience.tx_execute(%s, 'events', 'update', '{\"body\": \"y\"}', '{\"id\": 2}')",
        (tx,),
    )
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 2
    assert conn.execute("select * from acct order by id").fetchall() == [(1, 101), (2, 200)]
    assert conn.execute("select * from events order by id").fetchall() == [
        (1, 1, "a"),
        (2, 15, "x"),
    ]


def _live_0_1_0(conn: psycopg.Connection[Any]) -> Any:
    conn.execute(APP)
    tx = _one(conn, "select resilience.tx_begin(600000, 'live')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')", (tx,)
    )
    return tx


def _still_0_1_0_and_working(conn: psycopg.Connection[Any], tx: Any) -> None:
    assert _one(conn, "select version_num from resilience.alembic_version") == "0004"
    assert _one(conn, "select status from resilience.transactions where id = %s", tx) == "active"
    with pytest.raises(psycopg.errors.LockNotAvailable):  # its claim holds
        conn.execute("update acct set bal = 5 where id = 1")
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["success"] is True
    assert conn.execute("select * from acct order by id").fetchall() == [(1, 100), (2, 200)]


def test_upgrade_from_0_1_0_stopped_by_lock_timeout_leaves_0_1_0_working(bare_dsn, install_0_1_0):
    """From 0.1.0 the capture triggers must be rebuilt: the upgrade waits for
    the app's transactions on managed tables. With a lock_timeout it fails
    whole (55P03) instead, and can be run again."""
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        tx = _live_0_1_0(conn)
        with psycopg.connect(bare_dsn) as app:
            app.execute("update acct set bal = 201 where id = 2")
            # psycopg's error, though a revision (run by Alembic) waited.
            with pytest.raises(psycopg.errors.LockNotAvailable):
                installer.install(make_conninfo(bare_dsn, options="-c lock_timeout=200ms"))
            app.rollback()
        _still_0_1_0_and_working(conn, tx)
        installer.install(bare_dsn)
        assert _one(conn, "select version_num from resilience.alembic_version") == "0008"


def test_upgrade_from_0_1_0_whose_backend_is_terminated_leaves_0_1_0_working(
    bare_dsn, install_0_1_0
):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        tx = _live_0_1_0(conn)
        failure: list[BaseException] = []

        def upgrade() -> None:
            try:
                installer.install(bare_dsn)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failure.append(exc)

        with psycopg.connect(bare_dsn) as app:
            app.execute("update acct set bal = 201 where id = 2")
            worker = threading.Thread(target=upgrade)
            worker.start()
            pid = _waiting_installer(conn, exclude=app.info.backend_pid)
            conn.execute("select pg_terminate_backend(%s)", (pid,))
            worker.join(60)
            app.rollback()
        assert not worker.is_alive()
        assert len(failure) == 1
        assert isinstance(getattr(failure[0], "orig", failure[0]), psycopg.OperationalError)
        _still_0_1_0_and_working(conn, tx)


def test_upgrade_from_0_1_0_whose_client_is_killed_leaves_0_1_0_working(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        tx = _live_0_1_0(conn)
        with psycopg.connect(bare_dsn) as app:
            app.execute("update acct set bal = 201 where id = 2")
            client = subprocess.Popen(
                [sys.executable, "-m", "pgresilience.cli", "install", "--dsn", bare_dsn],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ),
            )
            pid = _waiting_installer(conn, exclude=app.info.backend_pid)
            os.kill(client.pid, signal.SIGKILL)
            client.wait()
            # The backend goes on with its statement once the app lets go,
            # then finds its client gone before any COMMIT.
            app.rollback()
        for _ in range(600):
            if not _one(conn, "select count(*) from pg_stat_activity where pid = %s", pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the killed client's backend stayed")
        _still_0_1_0_and_working(conn, tx)


def test_the_0_1_0_installer_run_over_head_changes_nothing(dsn, conn, install_0_1_0):
    """No downgrade is promised: an older installer over a newer install must
    fail whole, leaving HEAD and its live transaction as they were."""
    conn.execute(APP)
    tx = _one(conn, "select resilience.tx_begin(600000, 'live')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')", (tx,)
    )
    catalog = (
        "select p.oid::regprocedure::text, md5(p.prosrc) from pg_proc as p"
        " where p.pronamespace in ('resilience'::regnamespace, 'public'::regnamespace) order by 1"
    )
    before = conn.execute(catalog).fetchall()

    with pytest.raises(subprocess.CalledProcessError):
        install_0_1_0(dsn)

    assert conn.execute(catalog).fetchall() == before
    assert _one(conn, "select version_num from resilience.alembic_version") == "0008"
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 1
    assert conn.execute("select * from acct order by id").fetchall() == [(1, 100), (2, 200)]


def test_two_upgrades_from_0_1_0_at_once_are_serialized(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        tx = _live_0_1_0(conn)
        failures: list[BaseException] = []

        def upgrade() -> None:
            try:
                installer.install(bare_dsn)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                failures.append(exc)

        workers = [threading.Thread(target=upgrade) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert failures == []
        assert _one(conn, "select version_num from resilience.alembic_version") == "0008"
        assert conn.execute(
            "select status, outcome from resilience.transactions where id = %s", (tx,)
        ).fetchone() == ("rolled_back", {"reason": "upgrade to typed images"})
        assert (
            _one(
                conn,
                "select count(*) from resilience.audit_log where tx_id = %s and event = 'rollback'",
                tx,
            )
            == 1
        )
        assert conn.execute("select * from acct order by id").fetchall() == [(1, 100), (2, 200)]


def test_reinstall_does_not_wait_for_an_app_transaction_that_used_the_api(dsn, conn):
    conn.execute(APP)
    with psycopg.connect(dsn) as app:
        # The app's own database transaction, still open, called the API.
        tx = _one(app, "select resilience.tx_begin(60000, 'in my transaction')")
        app.execute(
            "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 5}', '{\"id\": 1}')",
            (tx,),
        )
        # The policies of the package's tables (and of the image table) are
        # in place: not re-created, so no lock waits for this transaction.
        installer.install(make_conninfo(dsn, options=LOCK_TIMEOUT))
        app.commit()
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 1
    assert conn.execute("select * from acct order by id").fetchall() == [(1, 100), (2, 200)]
