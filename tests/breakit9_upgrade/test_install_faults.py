"""Installs that meet each other or die midway: two at once, in one
database or in two databases of a server that has no package roles yet;
the installing backend terminated at several points, then the install run
again. `install` is one database transaction: all or nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Server, _unique
from psycopg.conninfo import make_conninfo
from releases import LAST_V2_CORE, install_release, release_tree

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
from pgresilience.embedded import EmbeddedPostgres

from catalog import catalog_listing, definition_listing


def _fresh(server: Server, request: pytest.FixtureRequest) -> str:
    name = _unique("pgr_b9")
    server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return server.dsn(name)


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls together, each in its own thread (and connection)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=120) for f in [pool.submit(c) for c in calls]]


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
    reports = _at_once(lambda: installer.install(dsn), lambda: installer.install(dsn))
    # One migrated, the other found it done.
    done = sorted(any("already at revision" in a for a in r.actions) for r in reports)
    assert done == [False, True], [r.actions for r in reports]
    assert definition_listing(dsn) == reference


def test_two_installs_at_once_into_two_databases_of_a_server_without_the_roles() -> None:
    """The package's roles are cluster-wide: two databases installed at once
    (CI preparing test databases in parallel) both create them, and two
    uninstalled at once both drop their use of them: the last one out drops
    them."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database one")
            admin.execute("create database two")
        one, two = pg.dsn("one"), pg.dsn("two")
        _at_once(lambda: installer.install(one), lambda: installer.install(two))
        _at_once(lambda: installer.uninstall(one), lambda: installer.uninstall(two))
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            roles = admin.execute(
                "select count(*) from pg_roles where rolname like 'resilience%'"
            ).fetchone()
        assert roles == (0,)


def _install_killed(dsn: str, delay: float) -> bool:
    """Installs in a thread whose backend is terminated `delay` seconds after
    it is first seen busy; True when the install failed that way."""
    app = f"b9-{uuid.uuid4().hex[:8]}"
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            installer.install(make_conninfo(dsn, application_name=app))
            outcome.append(None)
        except psycopg.OperationalError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while thread.is_alive():
            row = conn.execute(
                "select pid from pg_stat_activity where application_name = %s and state <> 'idle'",
                (app,),
            ).fetchone()
            if row:
                time.sleep(delay)
                conn.execute("select pg_terminate_backend(%s)", (row[0],))
                break
            time.sleep(0.005)
    thread.join(120)
    return outcome[0] is not None


def test_an_install_terminated_midway_leaves_nothing_and_runs_again(
    server: Server, request: pytest.FixtureRequest, reference: list[str]
) -> None:
    killed = []
    for delay in (0.05, 0.4):  # early (the migrations), late (the SQL files)
        dsn = _fresh(server, request)
        before = catalog_listing(dsn)
        if _install_killed(dsn, delay):
            killed.append(delay)
            assert catalog_listing(dsn) == before
        installer.install(dsn)
        assert definition_listing(dsn) == reference
    assert killed, "no install was terminated midway"


@pytest.fixture(scope="module")
def v2_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, LAST_V2_CORE)


def test_an_upgrade_terminated_midway_leaves_the_release_and_its_transactions(
    server: Server, request: pytest.FixtureRequest, v2_tree: Path
) -> None:
    dsn = _fresh(server, request)
    install_release(v2_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        state = put_in_flight(conn)
        revision = installer.installed_revision(conn)
        listing = definition_listing(dsn)
        if _install_killed(dsn, 0.3):
            assert installer.installed_revision(conn) == revision
            assert definition_listing(dsn) == listing
            assert snapshot(conn) == state.after
        installer.install(dsn)
        finish_and_check(conn, state)


def test_installs_under_live_logical_transactions_fail_none_and_lose_nothing(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """Installing again while the app's logical transactions run (a deploy
    that re-runs `pgresilience install`): no call fails, every rollback is
    exact."""
    dsn = _fresh(server, request)
    installer.install(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        before = snapshot(conn)
    stop = threading.Event()
    errors: list[Exception] = []
    rounds = [0, 0]

    def worker(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    tx = call(conn, "select resilience.tx_begin()")
                    region = ("eu", "us")[i]
                    for key in (1, 2):
                        match = {"region": region, "id": key}
                        execute(conn, tx, "public.orders", "update", {"Note": "w"}, match)
                    odd = '"Odd ""Schema""".select'
                    execute(conn, tx, odd, "update", {"d": 5 + i}, {"tx_id": i + 1})
                    call(conn, "select resilience.tx_rollback(%s)", tx)
                    rounds[i] += 1
                except Exception as exc:  # reported below
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            installer.install(dsn)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert all(rounds), rounds
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert snapshot(conn) == before
