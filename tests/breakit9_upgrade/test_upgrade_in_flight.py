"""Upgrading over the last v2-core release with real state in flight: open
logical transactions with images on hostile tables, a savepoint, claims,
shared circuits and schema versions. After `install` of HEAD each of them
finishes as it would have before, and the catalog is a fresh HEAD install's.
Over 0.1.0, the upgrade rolls them back first, as documented. `status`
tells each state as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Server, _unique
from releases import LAST_V2_CORE, RELEASE_0_1_0, install_release, release_tree

from breakit9_upgrade.world import (
    SCHEMA,
    TABLES,
    call,
    execute,
    finish_and_check,
    manage_all,
    put_in_flight,
    snapshot,
)
from pgresilience import installer
from pgresilience.status import head_revision, status_lines

from catalog import definition_listing

CLI = [sys.executable, "-m", "pgresilience.cli"]


def _status(dsn: str) -> str:
    """`pgresilience status`, which must succeed: the database has the package."""
    done = subprocess.run(CLI + ["status", "--dsn", dsn], capture_output=True, text=True)
    assert done.returncode == 0, done
    return done.stdout


def _status_of_an_earlier_release(dsn: str) -> None:
    """Truthful about an earlier release: its revision, the upgrade, and no
    section this client would read with functions that release lacks."""
    out = _status(dsn)
    assert f"(upgrade available: {head_revision()})" in out, out
    assert "run pgresilience install to upgrade" in out
    assert "[logical transactions]" not in out


@pytest.fixture(scope="module")
def v2_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, LAST_V2_CORE)


def _fresh(server: Server, request: pytest.FixtureRequest) -> str:
    name = _unique("pgr_b9")
    server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return server.dsn(name)


def _circuits(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select (name, state, open_until, open_count, reason, failure_rate, updated_at,"
        " updated_by)::text from resilience.circuits order by name"
    ).fetchall()
    return [r[0] for r in rows]


def test_upgrade_from_v2_core_keeps_transactions_claims_circuits_and_versions(
    server: Server, request: pytest.FixtureRequest, v2_tree: Path
) -> None:
    dsn = _fresh(server, request)
    install_release(v2_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        conn.execute(
            "select resilience._circuit_publish('gemini-api', 'open', 60, 'boom', 'p1', 0.5)"
        )
        conn.execute("select resilience._circuit_publish('ñ \"q\"', 'disabled', 0, 'op', 'p2')")
        circuits = _circuits(conn)
        call(conn, "select resilience.schema_refresh()")
        version = call(conn, "select resilience.schema_current()")
        state = put_in_flight(conn)
        _status_of_an_earlier_release(dsn)

        installer.install(dsn)

        out = _status(dsn)
        assert "logical transactions: 3 active" in out and "upgrade available" not in out, out
        assert _circuits(conn) == circuits
        assert call(conn, "select resilience.schema_current()")["version"] == version["version"]
        # The upgrade is not a migration of the app's schema: nothing to record.
        call(conn, "select resilience.schema_refresh()")
        assert call(conn, "select resilience.schema_current()")["version"] == version["version"]
        finish_and_check(conn, state)

    fresh = _fresh(server, request)
    installer.install(fresh)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
    assert definition_listing(dsn) == definition_listing(fresh)


@pytest.fixture(scope="module")
def v1_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, RELEASE_0_1_0)


def test_upgrade_from_0_1_0_rolls_every_open_transaction_back_exactly_as_documented(
    server: Server, request: pytest.FixtureRequest, v1_tree: Path
) -> None:
    dsn = _fresh(server, request)
    install_release(v1_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn, TABLES[:2])  # 0.1.0 could not manage partitioned tables
        initial = snapshot(conn)
        state = put_in_flight(conn, v1=True)
        _status_of_an_earlier_release(dsn)

        installer.install(dsn)
        assert "logical transactions: 0 active" in _status(dsn)

        # 0.1.0's images were jsonb, which has no float -0: that one value
        # comes back as 0 (documented), every other exactly.
        odd = '"Odd ""Schema"""."select"'
        lost = [r.replace(",-0,", ",0,") for r in initial[odd]]
        assert lost != initial[odd]
        assert snapshot(conn) == {**initial, odd: lost}
        for tx in (state.rolled, state.committed, state.locker):
            status = call(conn, "select resilience.tx_status(%s)", tx)
            assert status["status"] == "rolled_back", status
            reason = call(
                conn, "select outcome ->> 'reason' from resilience.transactions where id = %s", tx
            )
            assert reason == "upgrade to typed images"
        # Nothing is claimed any more, and the tables work as managed ones.
        tx = call(conn, "select resilience.tx_begin()")
        execute(conn, tx, "public.orders", "update", {"Note": "after"}, {"region": "us", "id": 2})
        execute(conn, tx, '"Odd ""Schema""".select', "delete", None, {"tx_id": 1})
        call(conn, "select resilience.tx_rollback(%s)", tx)
        assert snapshot(conn) == {**initial, odd: lost}
    # The catalog against a fresh install: tests/transactions/test_upgrade_from_v1.py.


def test_status_of_a_database_a_newer_release_installed_says_so_without_reading_it(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("update resilience.alembic_version set version_num = '9999_from_the_future'")
    lines = status_lines(conn)
    assert (
        f"installed: revision 9999_from_the_future (by a newer pgresilience: this one knows"
        f" up to {head_revision()})" in lines
    ), lines
    assert "  use the pgresilience that installed it for its sections" in lines
