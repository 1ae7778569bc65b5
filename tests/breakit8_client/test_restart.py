"""The server stopped the hard way (immediate shutdown, as a crash or a
failover) and back, under a manager that keeps its pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, TransactionManager, installer
from pgresilience.embedded import EmbeddedPostgres


@pytest.fixture
def own_server(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A server of this test's own (the session's must not crash), installed,
    with table t (ids 1, 2) managed."""
    caplog.set_level(logging.CRITICAL, logger="psycopg.pool")  # its reconnect noise
    with EmbeddedPostgres() as pg:
        dsn = pg.dsn("postgres")
        installer.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "create table t (id int primary key, v text);"
                " insert into t values (1, 'a'), (2, 'b');"
                " select resilience.manage_table('t')"
            )
        yield pg, dsn


def values(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select v from t order by id").fetchall()


def test_crash_and_back(own_server: tuple[EmbeddedPostgres, str]) -> None:
    """Both managers, their pools full of sessions the crash closed: after the
    restart the next calls run (README: a pooled connection the server closed
    fails at BEGIN and the call runs on another); the logical transactions begun
    before the crash are still there (they are rows), and a rollback after it
    restores what they wrote."""
    pg, dsn = own_server

    with TransactionManager(dsn, pool_size=3) as tm:

        async def async_part(atm: AsyncTransactionManager, step: str) -> Any:
            if step == "before":
                tx = await atm.begin(label="async")
                await atm.execute(tx, "t", "update", {"v": "y"}, {"id": 2})
                return tx
            return await atm.rollback(step)

        async def both() -> None:
            async with AsyncTransactionManager(dsn, pool_size=3) as atm:
                atx = await async_part(atm, "before")
                tx = tm.begin(label="sync")
                tm.execute(tx, "t", "update", {"v": "x"}, {"id": 1}).unwrap()
                assert values(dsn) == [("x",), ("y",)]

                # (no call while it is down: each would wait for the pool's
                # 30 s getconn timeout, see the report of breakit8_client)
                pg.crash()
                pg.restart()

                assert tm.status(tx)["status"] == "active"
                assert tm.rollback(tx)["status"] == "rolled_back"
                assert (await async_part(atm, atx))["status"] == "rolled_back"

        asyncio.run(both())
    assert values(dsn) == [("a",), ("b",)]
