"""`pgresilience uninstall` with managed tables and logical transactions in
flight: refused (exit 6, nothing touched) without --force; with it, every
transaction rolled back, then exactly what install created removed: the
app's tables, their rows, their own triggers and functions stay, nothing of
the package remains. Installed again, everything works as on a fresh one."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from conftest import Server, _unique

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

from catalog import definition_listing

CLI = [sys.executable, "-m", "pgresilience.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120)


def _fresh(server: Server, request: pytest.FixtureRequest) -> str:
    name = _unique("pgr_b9")
    server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return server.dsn(name)


def test_uninstall_with_transactions_in_flight_refuses_then_force_restores_and_leaves_no_trace(
    server: Server, request: pytest.FixtureRequest
) -> None:
    dsn = _fresh(server, request)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The app's own PL/Python, there before the package: uninstall keeps
        # it (where the server can load it: not the matrix's npm builds).
        conn.execute(
            "do $$ begin create extension plpython3u;"
            " exception when undefined_file or feature_not_supported then null; end $$"
        )
        conn.execute(SCHEMA)
        conn.execute(
            "create table public.acc (id integer primary key, email text unique);"
            " insert into public.acc values (5, 'x@example.org')"
        )
        initial = snapshot(conn)
    before_install = definition_listing(dsn)
    assert _cli("status", "--dsn", dsn).returncode == 5

    installer.install(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        manage_all(conn)
        conn.execute("select resilience.manage_table('public.acc')")
        state = put_in_flight(conn)
        deleter = call(conn, "select resilience.tx_begin()")
        execute(conn, deleter, "public.acc", "delete", None, {"id": 5})
        # Outside any logical transaction, the deleted row's email is taken.
        conn.execute("insert into public.acc values (6, 'x@example.org')")
        state.after = snapshot(conn)
    # Installed again, transactions open: nothing of theirs changes.
    installer.install(dsn)
    listing = definition_listing(dsn)

    refused = _cli("uninstall", "--dsn", dsn)
    assert refused.returncode == 6, refused
    assert "4 logical transactions are active" in refused.stderr
    assert definition_listing(dsn) == listing
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert snapshot(conn) == state.after

    # force overwrites drift, never a constraint: one undo refused stops it
    # whole, nothing removed, until the app settles the row.
    stuck = _cli("uninstall", "--dsn", dsn, "--force")
    assert stuck.returncode == 1 and "RZ005" in stuck.stderr, stuck
    assert "acc_email_key" in stuck.stderr
    assert definition_listing(dsn) == listing
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert snapshot(conn) == state.after
        conn.execute("delete from public.acc where id = 6")

    done = _cli("uninstall", "--dsn", dsn, "--force")
    assert done.returncode == 0, done
    assert "rolled back 4 active logical transactions" in done.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert snapshot(conn) == initial
    assert definition_listing(dsn) == before_install
    assert installer.uninstall(dsn) == ["pgresilience is not installed here: nothing to do"]

    # The roles stay: other databases of this server (the suite's) use them.
    installer.install(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        manage_all(conn)
        finish_and_check(conn, put_in_flight(conn))
