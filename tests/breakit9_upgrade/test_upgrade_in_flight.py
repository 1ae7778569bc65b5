"""Upgrading over the last v2-core release with real state in flight: open
logical transactions with images on hostile tables, a savepoint, claims,
shared circuits and schema versions. After `install` of HEAD each of them
finishes as it would have before, and the catalog is a fresh HEAD install's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from catalog import definition_listing
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
        "select (name, state, open_until, open_count, reason, failure_rate, updated_at, updated_by)::text"
        " from resilience.circuits order by name"
    ).fetchall()
    return [r[0] for r in rows]


def test_a_head_install_finishes_in_flight_transactions_exactly(
    server: Server, request: pytest.FixtureRequest
) -> None:
    dsn = _fresh(server, request)
    installer.install(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn)
        state = put_in_flight(conn)
        installer.install(dsn)  # the same release again, transactions open
        finish_and_check(conn, state)


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

        installer.install(dsn)

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

        installer.install(dsn)

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

    fresh = _fresh(server, request)
    installer.install(fresh)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(SCHEMA)
        manage_all(conn, TABLES[:2])
    assert definition_listing(dsn) == definition_listing(fresh)
