"""A task cancelled while ``transaction()`` begins, at the worst moment: the
database transaction of tx_begin is committing. Made deterministic with a
synchronous standby that never answers: the COMMIT waits for it, the
cancellation reaches it there, and PostgreSQL keeps the commit (it is
already durable locally) while psycopg raises the cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgresilience import AsyncTransactionManager, TransactionManager


def _settings(conn: psycopg.Connection[Any], standby: str, commit: str) -> None:
    if standby:
        conn.execute(f"alter system set synchronous_standby_names = '{standby}'")
        conn.execute(f"alter system set synchronous_commit = '{commit}'")
    else:
        conn.execute("alter system reset synchronous_standby_names")
        conn.execute("alter system reset synchronous_commit")
    conn.execute("select pg_reload_conf()")
    deadline = time.monotonic() + 30
    while True:  # new sessions see the reloaded file
        with psycopg.connect(conn.info.dsn, autocommit=True) as probe:
            row = probe.execute("show synchronous_standby_names").fetchone()
        if row == (standby,) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.fixture
def commits_wait(conn: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """A conninfo whose sessions' commits wait for a standby that does not
    exist; every other session commits as usual (synchronous_commit local)."""
    _settings(conn, "b8_nobody", "local")
    try:
        yield make_conninfo(dsn, options="-c synchronous_commit=on")
    finally:
        _settings(conn, "", "")


def test_begin_cancelled_at_its_commit(conn: psycopg.Connection[Any], commits_wait: str) -> None:
    """The caller never got the id; the transaction must not stay active (it
    would be listed by tx_active until it expires): the manager rolls back
    a transaction whose begin it could not report."""

    # The rollback of that transaction commits too: the standby goes away
    # (the waits end) a while after the cancellation.
    threading.Timer(2.0, _settings, (conn, "", "")).start()

    async def main() -> None:
        async with AsyncTransactionManager(commits_wait) as tm:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    async with tm.transaction(label="never-seen"):
                        pytest.fail("the block must not run")

    asyncio.run(main())
    rows = conn.execute(
        "select status from resilience.transactions where label = 'never-seen'"
    ).fetchall()
    assert rows == [("rolled_back",)]


def test_begin_interrupted_by_ctrl_c_at_its_commit(
    conn: psycopg.Connection[Any], commits_wait: str
) -> None:
    """The same in sync code: Ctrl-C while tx_begin's COMMIT waits."""
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    threading.Timer(2.0, _settings, (conn, "", "")).start()
    with TransactionManager(commits_wait) as tm:
        with pytest.raises(KeyboardInterrupt):
            tm.begin(label="interrupted")
    rows = conn.execute(
        "select status from resilience.transactions where label = 'interrupted'"
    ).fetchall()
    assert rows == [("rolled_back",)]
