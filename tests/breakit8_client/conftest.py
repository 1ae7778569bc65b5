"""Fixtures of the client review: a managed table ``accounts`` and helpers
that find, stop and resume the backends a manager's pool opened."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

ACCOUNTS = """
create table accounts (id int primary key, owner text not null, balance int not null);
insert into accounts select g, 'owner ' || g, 100 from generate_series(1, 40) g;
select resilience.manage_table('accounts');
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with table accounts (ids 1..40, balance 100 each) managed."""
    conn.execute(ACCOUNTS)
    return conn


def other_backends(conn: psycopg.Connection[Any]) -> list[int]:
    """Client backends of this database other than ``conn``'s own."""
    rows = conn.execute(
        "select pid from pg_stat_activity where datname = current_database()"
        " and backend_type = 'client backend' and pid <> pg_backend_pid()"
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def stopped() -> Iterator[Callable[[list[int]], None]]:
    """stop(pids): SIGSTOP those backends; every one is resumed (SIGCONT) at
    the end of the test, whatever happened."""
    seen: list[int] = []

    def stop(pids: list[int]) -> None:
        for pid in pids:
            seen.append(pid)
            os.kill(pid, signal.SIGSTOP)

    yield stop
    for pid in seen:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


# PgBouncer in transaction mode, as tests/client provides it.
from client.conftest import bouncer  # noqa: E402, F401
