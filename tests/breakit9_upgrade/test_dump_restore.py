"""pg_dump / pg_restore of a database with the package, hostile managed
tables and logical transactions in flight: in the restored copy (every
table under a new OID) the transactions finish exactly, their claims hold,
`status` is truthful and the schema history goes on without a version of
its own for the restore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import Server, _unique
from psycopg.conninfo import conninfo_to_dict

from breakit9_upgrade.world import (
    SCHEMA,
    call,
    execute,
    finish_and_check,
    manage_all,
    put_in_flight,
    snapshot,
)
from pgresilience import installer
from pgresilience.embedded import find_bin_dir

CLI = [sys.executable, "-m", "pgresilience.cli"]


def _tool(name: str, dsn: str, *args: str) -> None:
    params = conninfo_to_dict(dsn)
    subprocess.run(
        [
            str(find_bin_dir() / name),
            "-h", str(params.get("host") or "127.0.0.1"),
            "-p", str(params.get("port") or 5432),
            "-U", str(params.get("user") or "postgres"),
            *args,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


@pytest.mark.pg_dump
def test_a_restored_copy_finishes_the_transactions_in_flight_exactly(
    server: Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    names = [_unique("pgr_b9dump"), _unique("pgr_b9rest")]
    for name in names:
        server.create_database(name)
        request.addfinalizer(lambda name=name: server.drop_database(name))
    source, copy = (server.dsn(n) for n in names)
    installer.install(source)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        version = call(conn, "select resilience.schema_current()")["version"]
        state = put_in_flight(conn)
        oids = snapshot(conn).keys()

    dump = tmp_path / "dump"
    _tool("pg_dump", source, "-Fc", "-f", str(dump), "-d", names[0])
    _tool("pg_restore", copy, "-d", names[1], str(dump))

    status = subprocess.run(CLI + ["status", "--dsn", copy], capture_output=True, text=True)
    assert status.returncode == 0, status
    assert "logical transactions: 3 active" in status.stdout, status.stdout
    with psycopg.connect(copy, autocommit=True) as conn:
        assert snapshot(conn).keys() == oids
        assert call(conn, "select resilience.schema_current()")["version"] == version
        call(conn, "select resilience.schema_refresh()")
        assert call(conn, "select resilience.schema_current()")["version"] == version
        finish_and_check(conn, state)
        # New transactions capture and undo in the copy as in the source.
        tx = call(conn, "select resilience.tx_begin()")
        execute(conn, tx, "public.events", "insert", {"id": 8, "at": "2026-02-02"})
        execute(conn, tx, '"Odd ""Schema""".select', "update", {"d": 9}, {"tx_id": 1})
        call(conn, "select resilience.tx_rollback(%s)", tx)
        assert snapshot(conn) == state.before
    # And the source, untouched by the copy's rollbacks, finishes alike.
    with psycopg.connect(source, autocommit=True) as conn:
        finish_and_check(conn, state)
