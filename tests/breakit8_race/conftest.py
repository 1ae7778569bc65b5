"""Isolation-style helpers: real sessions, each step driven in a chosen order.

A step that must block runs in a `Step` thread; `Race.wait_blocked` waits
until its backend waits on a lock (pg_stat_activity), so that the order of
the steps is the order the test names, never a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

TABLE_SQL = """
create table public.acct (
    id integer primary key,
    v text not null,
    n integer not null default 0,
    hist text not null default ''
);
insert into public.acct (id, v, n) select g, 'row ' || g, g * 10 from generate_series(1, 5) as g;
select resilience.manage_table('public.acct');
grant select, insert, update, delete on public.acct to race_user;
"""


def sqlstate_of(action: Callable[[], Any]) -> str | None:
    """The SQLSTATE an action fails with, None when it succeeds."""
    try:
        action()
    except psycopg.Error as error:
        return error.sqlstate
    return None


class Step(threading.Thread):
    """One session's call run in a thread, because it is expected to block."""

    def __init__(self, action: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.action = action
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.action()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error

    def outcome(self, timeout: float = 30.0) -> Any:
        """The step's result once it finished; re-raises its error."""
        self.join(timeout)
        assert not self.is_alive(), "step still blocked"
        if self.error is not None:
            raise self.error
        return self.result

    def sqlstate(self, timeout: float = 30.0) -> str | None:
        try:
            self.outcome(timeout)
        except psycopg.Error as error:
            return error.sqlstate
        return None


@dataclass
class Race:
    dsn: str
    user_dsn: str
    admin: psycopg.Connection[Any]
    sessions: list[psycopg.Connection[Any]] = field(default_factory=list)
    pids: dict[int, int] = field(default_factory=dict)

    def session(
        self, sub: str = "alice", *, autocommit: bool = True, superuser: bool = False
    ) -> psycopg.Connection[Any]:
        """A connection as role race_user (or the superuser, an admin), JWT
        subject `sub` (the owner)."""
        connection = psycopg.connect(self.dsn if superuser else self.user_dsn, autocommit=True)
        connection.execute(
            "select set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": sub}),)
        )
        connection.execute("set statement_timeout = '60s'")
        row = connection.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        self.pids[id(connection)] = int(row[0])
        connection.autocommit = autocommit
        self.sessions.append(connection)
        return connection

    @staticmethod
    def call(connection: psycopg.Connection[Any], function: str, *args: Any) -> Any:
        """select resilience.<function>(args), jsonb arguments given as dicts."""
        values = [psycopg.types.json.Jsonb(a) if isinstance(a, dict | list) else a for a in args]
        marks = ", ".join(["%s"] * len(values))
        row = connection.execute(f"select resilience.{function}({marks})", values).fetchone()
        assert row is not None
        return row[0]

    @staticmethod
    def admin_call(connection: psycopg.Connection[Any], statement: str, *args: Any) -> Any:
        """A statement's one value (as the connection's role: reset it for admin)."""
        row = connection.execute(statement, args).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return row[0]

    def begin(self, connection: psycopg.Connection[Any], timeout_ms: int = 60000) -> Any:
        return self.call(connection, "tx_begin", timeout_ms)

    def execute(
        self,
        connection: psycopg.Connection[Any],
        tx: Any,
        operation: str,
        data: Any = None,
        match: Any = None,
    ) -> Any:
        return self.call(connection, "tx_execute", tx, "acct", operation, data, match)

    def pid(self, connection: psycopg.Connection[Any]) -> int:
        """The session's backend (known without a query: it may be busy)."""
        return self.pids[id(connection)]

    @staticmethod
    def plain(connection: psycopg.Connection[Any], statement: str) -> str | None:
        """A plain write's SQLSTATE (None: it went through)."""
        return sqlstate_of(lambda: connection.execute(statement))  # type: ignore[arg-type]

    def wait_blocked(self, pid: int, timeout: float = 20.0) -> None:
        """Until backend `pid` waits on a lock (the step is where the test wants it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.admin.execute(
                "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
        raise AssertionError(f"backend {pid} never waited on a lock")

    def rows(self) -> list[str]:
        """The table as row::text, by key: the oracle compares these."""
        query = "select a::text from public.acct as a order by a.id"
        return [r[0] for r in self.admin.execute(query)]

    def status(self, tx: Any) -> str:
        row = self.admin.execute(
            "select status from resilience.transactions where id = %s", (tx,)
        ).fetchone()
        assert row is not None
        return str(row[0])

    def expire(self, tx: Any) -> None:
        self.admin.execute(
            "update resilience.transactions"
            " set started_at = clock_timestamp() - interval '2 seconds',"
            " expires_at = clock_timestamp() - interval '1 second' where id = %s",
            (tx,),
        )

    def claims(self) -> list[tuple[Any, str]]:
        """(tx_id, status) of every claim (claiming image row) in the database."""
        return list(
            self.admin.execute(
                "select c.tx_id::text, t.status from resilience._claims() as c"
                " left join resilience.transactions as t on t.id = c.tx_id"
            )
        )

    def assert_settled(self) -> None:
        """The invariants every interleaving ends in: a claim, a claimed table
        or an image belongs to an active transaction (images: or a failed one)."""
        stray = self.admin.execute(
            """
            select 'claimed_tables', c.tx_id::text, t.status
            from resilience.claimed_tables as c
            left join resilience.transactions as t on t.id = c.tx_id
            where t.status is distinct from 'active'
            """
        ).fetchall()
        images = "select image_table::text from resilience.managed_tables"
        images += " where image_table is not null"
        for image in [r[0] for r in self.admin.execute(images)]:
            stray += self.admin.execute(
                f"select 'image', i.tx_id::text, t.status, i.claim from {image} as i"  # noqa: S608
                " left join resilience.transactions as t on t.id = i.tx_id"
                " where t.status is null or t.status not in ('active', 'failed')"
                " or (i.claim and t.status <> 'active')"
            ).fetchall()
        assert stray == []


@pytest.fixture
def race(dsn: str, make_role: Callable[..., str]) -> Iterator[Race]:
    user_dsn = make_role("race_user", member_of=("resilience_user",))
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(TABLE_SQL)
        state = Race(dsn=dsn, user_dsn=user_dsn, admin=admin)
        try:
            yield state
        finally:
            for connection in state.sessions:
                connection.close()
