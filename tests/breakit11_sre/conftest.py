"""Fixtures of an SRE's review: a managed table of counters, a watcher of
the server's sessions, and a server of the module's own that may crash."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience.embedded import EmbeddedPostgres

ROWS = 4

TABLE = """
create table counters (id int primary key, n bigint not null default 0);
insert into counters select g, 0 from generate_series(1, {rows}) as g;
select resilience.manage_table('counters');
"""


def make_counters(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(TABLE.format(rows=ROWS))


def counters(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return dict(c.execute("select id, n from counters order by id").fetchall())


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def waiting_backend(admin_dsn: str, like: str, timeout: float = 5.0) -> int:
    """The pid of the session whose query matches `like` and waits for a lock."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:

        def find() -> int | None:
            row = c.execute(
                "select pid from pg_stat_activity where wait_event_type = 'Lock'"
                " and query like %s and pid <> pg_backend_pid()",
                (like,),
            ).fetchone()
            return None if row is None else int(row[0])

        return int(wait_for(find, timeout))


class Holder:
    """Another session holding a lock in an open database transaction."""

    def __init__(self, dsn: str, statement: str, params: Any = None) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute(statement, params)
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self.conn.closed:
                try:
                    self.conn.rollback()
                except psycopg.OperationalError:
                    pass  # the server went away meanwhile
                self.conn.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for holder in made:
        holder.release()


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedPostgres]:
    """A server of this module's own, pgresilience installed: it is crashed
    and restarted (the session's server is shared by every test)."""
    pg = EmbeddedPostgres().start()
    try:
        cli = Path(sys.executable).with_name("pgresilience")
        subprocess.run([str(cli), "install", "--dsn", pg.dsn()], check=True, capture_output=True)
        make_counters(pg.dsn())
        yield pg
    finally:
        pg.stop()
