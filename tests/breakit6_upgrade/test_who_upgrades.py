"""Who upgrades, and how (README "Install", "As a database owner that is not
superuser", "On Supabase"): a database owner that is not superuser, with
`pgresilience install` or with the script of `install --print-sql` applied
by psql; again over the same release with live state (nothing lost)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from releases import ROOT

from pgresilience import SchemaVersionManager, installer

APP = """
create table acct (id int primary key, bal int not null);
insert into acct values (1, 100), (2, 200), (3, 300);
select resilience.manage_table('acct');
"""
ROWS = [(1, 100), (2, 200), (3, 300)]


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def owner_db(server, make_role):
    """(owner conninfo, superuser conninfo) of a bare database owned by a
    role that is not superuser (nor CREATEROLE)."""
    make_role("pgr_b6_owner")
    name = "pgr_b6_" + os.urandom(6).hex()
    server.create_database(name, owner="pgr_b6_owner")
    try:
        yield server.dsn(name, user="pgr_b6_owner"), server.dsn(name)
    finally:
        server.drop_database(name)


def _script(tmp_path: Path, *options: str) -> Path:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", "install", "--print-sql", *options],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=True,
    )
    script = tmp_path / "pgresilience.sql"
    script.write_text(result.stdout)
    return script


def _psql(dsn: str, script: Path) -> None:
    psql_bin = shutil.which("psql")
    assert psql_bin, "psql is needed (apt package postgresql-client)"
    subprocess.run(
        [
            psql_bin,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            str(script),
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def _live(conn: psycopg.Connection[Any]) -> Any:
    conn.execute(APP)
    tx = _one(conn, "select resilience.tx_begin(600000, 'live')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')", (tx,)
    )
    conn.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
    conn.execute("select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 2}')", (tx,))
    return tx


def _app_works(conn: psycopg.Connection[Any]) -> None:
    tx = _one(conn, "select resilience.tx_begin(60000, 'after')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 7}', '{\"id\": 3}')", (tx,)
    )
    with pytest.raises(psycopg.errors.LockNotAvailable):
        conn.execute("update acct set bal = 8 where id = 3")
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 1
    assert conn.execute("select * from acct order by id").fetchall() == ROWS


@pytest.mark.parametrize("how", ["install", "psql"])
def test_a_non_superuser_owner_upgrades_0_1_0_in_use(how, owner_db, install_0_1_0, tmp_path):
    owner_dsn, _ = owner_db
    install_0_1_0(owner_dsn)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        tx = _live(conn)
        # Without event triggers the app records its migrations itself.
        conn.execute("select resilience.schema_refresh()")
        versions = "select version, hash from resilience.schema_versions order by 1"
        before = conn.execute(versions).fetchall()
        if how == "install":
            installer.install(owner_dsn)
        else:
            _psql(owner_dsn, _script(tmp_path, "--no-plpython", "--no-event-triggers"))
        assert _one(conn, "select version_num from resilience.alembic_version") == "0008"
        assert conn.execute("select * from acct order by id").fetchall() == ROWS
        assert conn.execute(
            "select status, outcome from resilience.transactions where id = %s", (tx,)
        ).fetchone() == ("rolled_back", {"reason": "upgrade to typed images"})
        _app_works(conn)
        # The upgrade changed nothing of the app's schema; the next migration
        # is one version with its one change (diffed by the client here).
        conn.execute("select resilience.schema_refresh()")
        assert conn.execute(versions).fetchall() == before
        conn.execute("alter table acct add column extra int")
        conn.execute("select resilience.schema_refresh()")
        assert len(conn.execute(versions).fetchall()) == len(before) + 1
    with SchemaVersionManager(owner_dsn) as svm:
        changes = svm.changes_since(before[-1][0])
    assert [[(c["type"], c["table"], c["column"]) for c in v] for v in changes] == [
        [("column_added", "public.acct", "extra")]
    ]


@pytest.mark.parametrize("how", ["install", "psql"])
def test_installing_the_same_release_again_loses_nothing_of_a_live_transaction(
    how, dsn, conn, tmp_path, server_features
):
    tx = _live(conn)
    conn.execute(
        "select resilience._circuit_publish("
        "'ai-api', 'open', 30, 'failures', 'worker-1', 0.5, false)"
    )
    conn.execute("create table later (id int primary key)")
    tables = "select * from resilience.{} order by 1, 2"
    state = [
        conn.execute(tables.format(t)).fetchall()
        for t in ("transactions", "tx_statements", "savepoints", "audit_log", "circuits")
    ] + [conn.execute("select version, hash from resilience.schema_versions order by 1").fetchall()]

    if how == "install":
        installer.install(dsn)
    else:
        _psql(dsn, _script(tmp_path, *([] if server_features.plpython else ["--no-plpython"])))

    assert [
        conn.execute(tables.format(t)).fetchall()
        for t in ("transactions", "tx_statements", "savepoints", "audit_log", "circuits")
    ] + [
        conn.execute("select version, hash from resilience.schema_versions order by 1").fetchall()
    ] == state
    # Its claims hold, its savepoint and rollback restore exactly.
    with pytest.raises(psycopg.errors.LockNotAvailable):
        conn.execute("update acct set bal = 5 where id = 1")
    assert _one(conn, "select resilience.tx_rollback_to(%s, 'sp')", tx)["success"] is True
    assert conn.execute("select * from acct order by id").fetchall() == [(1, 1), (2, 200), (3, 300)]
    assert _one(conn, "select resilience.tx_rollback(%s)", tx)["restored_rows"] == 1
    assert conn.execute("select * from acct order by id").fetchall() == ROWS
    _app_works(conn)
