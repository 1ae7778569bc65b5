"""Installs that meet each other or die midway: two at once, in one
database or in two databases of a server that has no package roles yet;
the installing backend terminated at several points, then the install run
again. `install` is one database transaction: all or nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Server, _unique
from releases import LAST_V2_CORE, install_release, release_tree

from breakit9_upgrade.world import SCHEMA, finish_and_check, manage_all, put_in_flight, snapshot
from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

from catalog import catalog_listing, definition_listing

CLI = [sys.executable, "-m", "pgresilience.cli"]


def _fresh(server: Server, request: pytest.FixtureRequest) -> str:
    name = _unique("pgr_b9")
    server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return server.dsn(name)


def _start(args: list[str], app: str = "") -> subprocess.Popen[str]:
    env = dict(os.environ, PGAPPNAME=app or "b9-cli")
    return subprocess.Popen(
        CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def reference(server: Server) -> Iterator[list[str]]:
    """A fresh install's catalog."""
    name = _unique("pgr_b9ref")
    server.create_database(name)
    installer.install(server.dsn(name))
    yield definition_listing(server.dsn(name))
    server.drop_database(name)


def test_two_installs_at_once_in_one_database_both_succeed_and_equal_one(
    server: Server, request: pytest.FixtureRequest, reference: list[str]
) -> None:
    dsn = _fresh(server, request)
    procs = [_start(["install", "--dsn", dsn]) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # One migrated, the other found it done.
    assert sorted("already at revision" in o for o, _ in outs) == [False, True], outs
    assert definition_listing(dsn) == reference


def test_two_installs_at_once_into_two_databases_of_a_server_without_the_roles(
    tmp_path: Path,
) -> None:
    """The package's roles are cluster-wide: two databases installed at once
    (CI preparing test databases in parallel) both create them."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database one")
            admin.execute("create database two")
        procs = [_start(["install", "--dsn", pg.dsn(db)]) for db in ("one", "two")]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        # And both uninstalled at once: the last one out drops the roles.
        procs = [_start(["uninstall", "--dsn", pg.dsn(db)]) for db in ("one", "two")]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            roles = admin.execute(
                "select count(*) from pg_roles where rolname like 'resilience%'"
            ).fetchone()
        assert roles == (0,)


def _kill_when_running(app: str, dsn: str, delay: float) -> bool:
    """Terminates the backend named `app` `delay` seconds after it is first
    seen busy; False when the process finished before."""
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select pid from pg_stat_activity where application_name = %s and state <> 'idle'",
                (app,),
            ).fetchone()
            if row:
                time.sleep(delay)
                killed = conn.execute("select pg_terminate_backend(%s)", (row[0],)).fetchone()
                return bool(killed and killed[0])
            time.sleep(0.005)
    return False


def test_an_install_terminated_midway_leaves_nothing_and_runs_again(
    server: Server, request: pytest.FixtureRequest, reference: list[str]
) -> None:
    for delay in (0.05, 0.4):  # early (the migrations), late (the SQL files)
        dsn = _fresh(server, request)
        before = catalog_listing(dsn)
        app = f"b9-{uuid.uuid4().hex[:8]}"
        proc = _start(["install", "--dsn", dsn], app)
        killed = _kill_when_running(app, dsn, delay)
        out, err = proc.communicate(timeout=120)
        if killed and proc.returncode != 0:
            assert catalog_listing(dsn) == before, err
            status = subprocess.run(CLI + ["status", "--dsn", dsn], capture_output=True, text=True)
            assert status.returncode == 5, status
        subprocess.run(CLI + ["install", "--dsn", dsn], check=True, capture_output=True)
        assert definition_listing(dsn) == reference


@pytest.fixture(scope="module")
def v2_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, LAST_V2_CORE)


def _revision(conn: psycopg.Connection[Any]) -> str | None:
    return installer.installed_revision(conn)


def test_an_upgrade_terminated_midway_leaves_the_release_and_its_transactions(
    server: Server, request: pytest.FixtureRequest, v2_tree: Path
) -> None:
    delay = 0.3
    dsn = _fresh(server, request)
    install_release(v2_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        state = put_in_flight(conn)
        revision = _revision(conn)
        listing = definition_listing(dsn)
        app = f"b9-{uuid.uuid4().hex[:8]}"
        proc = _start(["install", "--dsn", dsn], app)
        killed = _kill_when_running(app, dsn, delay)
        proc.communicate(timeout=120)
        if killed and proc.returncode != 0:
            assert _revision(conn) == revision
            assert definition_listing(dsn) == listing
            assert snapshot(conn) == state.after
        installer.install(dsn)
        finish_and_check(conn, state)
