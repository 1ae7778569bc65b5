"""The SQL API with odd arguments, the NOTIFY payload of a huge migration,
and a migration committed by two-phase commit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

from .conftest import Tracker


@pytest.mark.parametrize(
    ("call", "versions"),
    [
        ("schema_changes_since(null)", [1, 2]),  # null: from the start
        ("schema_changes_since(-5)", [1, 2]),
        ("schema_changes_since(9223372036854775807)", []),
        ("schema_history(null)", []),
        ("schema_history(-1)", []),
        ("schema_history(0)", []),
        ("schema_history(2147483647)", [2, 1]),
    ],
)
def test_odd_arguments_give_answers_not_errors(
    db_tracker: Tracker, call: str, versions: list[int]
) -> None:
    db_tracker.conn.execute("create table t (a int)")
    rows = db_tracker.conn.execute(f"select resilience.{call}").fetchall()  # type: ignore[arg-type]
    assert [r[0]["version"] for r in rows] == versions


def test_payload_of_a_huge_migration_stays_under_8000_bytes(db_tracker: Tracker, dsn: str) -> None:
    """1,500 tables with 61-byte names (2-byte characters) in one migration:
    one NOTIFY, under 8000 bytes, its table list shortened and flagged."""
    conn = db_tracker.conn
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen resilience_schema")
        with conn.transaction():
            for i in range(1500):
                conn.execute(f'create table "{"ü" * 26}_{i:08d}" (a int)')  # type: ignore[arg-type]
        notes = list(listener.notifies(timeout=30, stop_after=1))
    assert len(notes) == 1
    raw = notes[0].payload
    assert len(raw.encode()) < 8000
    payload = json.loads(raw)
    assert payload["tables_truncated"] is True
    assert 0 < len(payload["tables"]) < 1500
    assert payload["version"] == db_tracker.latest()
    history = conn.execute("select resilience.schema_history(1)").fetchone()
    assert history is not None and len(history[0]["tables"]) == 1500


@pytest.fixture(scope="module")
def twophase_dsn() -> Iterator[str]:
    """A server of its own that allows PREPARE TRANSACTION, pgresilience installed."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("alter system set max_prepared_transactions = 2")
        pg.crash()  # the setting needs a restart
        pg.restart()
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database twophase")
        installer.install(pg.dsn("twophase"))
        yield pg.dsn("twophase")


def prepare_and_commit(conn: psycopg.Connection[Any], *statements: str) -> None:
    conn.execute("begin")
    for statement in statements:
        conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
    try:
        conn.execute("prepare transaction 'migration'")
    except psycopg.errors.FeatureNotSupported:
        conn.execute("rollback")
        raise
    conn.execute("commit prepared 'migration'")


def test_a_two_phase_commit_migration_is_not_blocked(twophase_dsn: str) -> None:
    """PostgreSQL refuses to PREPARE a transaction that ran NOTIFY (0A000):
    the fold run by PREPARE TRANSACTION records the version without one."""
    with psycopg.connect(twophase_dsn, autocommit=True) as conn:
        conn.execute("listen resilience_schema")
        prepare_and_commit(conn, "create table prepared_one (a int)")
        assert conn.execute("select to_regclass('prepared_one')").fetchone() == ("prepared_one",)
        assert conn.execute(
            "select resilience.schema_current() -> 'tables' ? 'public.prepared_one'"
        ).fetchone() == (True,)
        latest = conn.execute("select max(version) from resilience.schema_versions").fetchone()
        # The next migration, committed plainly, notifies (and covers the one before).
        conn.execute("create table after_prepared (a int)")
        notes = list(conn.notifies(timeout=10, stop_after=1))
        assert latest is not None and json.loads(notes[0].payload)["version"] == latest[0] + 1


def test_two_phase_commit_workaround(twophase_dsn: str) -> None:
    """SET LOCAL resilience.installing = on: tracking skips the transaction,
    schema_refresh() records it afterwards."""
    with psycopg.connect(twophase_dsn, autocommit=True) as conn:
        prepare_and_commit(
            conn, "set local resilience.installing = on", "create table prepared_two (a int)"
        )
        row = conn.execute("select resilience.schema_refresh()").fetchone()
        assert row is not None and row[0]["changed"] is True
        assert conn.execute(
            "select resilience.schema_current() -> 'tables' ? 'public.prepared_two'"
        ).fetchone() == (True,)
