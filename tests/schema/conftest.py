"""Fixtures for schema tracking tests: a `tracker` that runs migrations and
returns the changes of the versions they created, in either diff mode."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from pgresilience.schema import ChangeList
from pgresilience.schema.watch import watch

if TYPE_CHECKING:
    from conftest import ServerFeatures


class Tracker:
    """Runs DDL on a test database and reads back what schema tracking recorded."""

    def __init__(self, conn: psycopg.Connection[Any], mode: str) -> None:
        self.conn = conn
        self.mode = mode
        self.warnings: list[str] = []
        conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            self.warnings.append(diag.message_primary)

    def latest(self) -> int:
        row = self.conn.execute("select max(version) from resilience.schema_versions").fetchone()
        assert row is not None
        return int(row[0] or 0)

    def since(self, version: int) -> list[ChangeList]:
        """Versions after ``version``, with their changes (diffed client-side
        when the database stored none)."""
        rows = self.conn.execute(
            "select resilience.schema_changes_since(%s)", (version,)
        ).fetchall()
        versions = [ChangeList.from_row(row[0]) for row in rows]
        for v in versions:
            assert v.diffed_in == self.mode, (v.version, v.diffed_in)
        return versions

    def migrate(self, *statements: str | sql.Composable) -> ChangeList:
        """Run ``statements`` in ONE transaction; exactly one version must result."""
        before = self.latest()
        with self.conn.transaction():
            for statement in statements:
                self.conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
        versions = self.since(before)
        assert len(versions) == 1, [v.version for v in versions]
        return versions[0]

    def nothing_recorded(self, *statements: str) -> None:
        before = self.latest()
        with self.conn.transaction():
            for statement in statements:
                self.conn.execute(statement)  # type: ignore[arg-type]
        assert self.latest() == before

    def hash(self) -> str:
        row = self.conn.execute("select resilience.schema_current()->>'hash'").fetchone()
        assert row is not None
        return str(row[0])


def summary(changes: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """{(type, table, column, severity)}: the facts most tests assert on."""
    return {(c["type"], c["table"], c["column"], c["severity"]) for c in changes}


def libpython_mapped(pid: int) -> bool:
    """Whether a backend has started PL/Python (its libpython is mapped).
    The tests' server runs on this machine (tests/conftest.py)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        pytest.skip("the server's backends are not on this machine")
    return "libpython" in maps.read_text()


def watch_lines(dsn: str, conn: psycopg.Connection[Any], *statements: str) -> list[str]:
    """What `pgresilience watch` prints while ``statements`` run (then a refresh)."""
    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(dsn, lines.append), kwargs={"stop": stop})
    thread.start()
    try:
        while not any(line.startswith("watching") for line in lines):
            stop.wait(0.05)
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
        for _ in range(200):
            if any(line.strip().startswith("[") for line in lines):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    return lines


def drop_plpython_diff(conn: psycopg.Connection[Any]) -> None:
    """Turn the database into one without PL/Python diff (like hosted Supabase)."""
    conn.execute("drop function if exists resilience._schema_diff(json)")


@pytest.fixture(params=[pytest.param("database", marks=pytest.mark.plpython), "client"])
def mode(request: pytest.FixtureRequest) -> str:
    """'database': PL/Python diffs at commit; 'client': plpython3u missing, the
    client diffs the stored deltas with the same module."""
    return str(request.param)


@pytest.fixture
def tracker(conn: psycopg.Connection[Any], mode: str) -> Iterator[Tracker]:
    if mode == "client":
        drop_plpython_diff(conn)
    yield Tracker(conn, mode)


@pytest.fixture
def db_tracker(conn: psycopg.Connection[Any], server_features: ServerFeatures) -> Tracker:
    """One mode only, for tests about something else than the diff: PL/Python
    where the server has it, else the client-side diff."""
    return Tracker(conn, "database" if server_features.plpython else "client")
