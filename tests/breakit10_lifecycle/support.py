"""Shared helpers of the lifecycle attacks: client roles, a managed table,
snapshots as `row::text`, and SQLSTATE assertions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

CLIENTS = ("lc_alice", "lc_bob", "lc_carol")


def clients(make_role: Callable[..., str], conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Non-superuser login roles, members of resilience_user (what README
    says a client needs), with the app's table grants; their conninfos."""
    dsns = {name: make_role(name, member_of=("resilience_user",)) for name in CLIENTS}
    conn.execute("grant usage on schema public to public")
    return dsns


def connect(dsn: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(dsn, autocommit=True)
    connection.execute("set statement_timeout = '20s'")
    return connection


def rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"select t::text from {table} as t order by 1")]


def call(conn: psycopg.Connection[Any], statement: str, *args: Any) -> Any:
    row = conn.execute(statement, args).fetchone()
    return None if row is None else row[0]


@contextmanager
def sqlstate(expected: str) -> Iterator[None]:
    with pytest.raises(psycopg.Error) as caught:
        yield
    assert caught.value.sqlstate == expected, (caught.value.sqlstate, str(caught.value))


def audit(
    conn: psycopg.Connection[Any], tx_id: Any
) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(event, actor_role, actor_sub, detail) of a transaction, oldest first."""
    return [
        (r[0], r[1], r[2], r[3] if isinstance(r[3], dict) else json.loads(r[3]))
        for r in conn.execute(
            "select event, actor_role, actor_sub, detail from resilience.audit_log"
            " where tx_id = %s order by id",
            (tx_id,),
        )
    ]


def expire(conn: psycopg.Connection[Any], tx_id: Any) -> None:
    """Make a transaction expired now (as the package owner), as if its
    timeout had run out: no sleeping in tests."""
    conn.execute(
        "update resilience.transactions"
        " set started_at = least(started_at, now() - interval '2 minutes'),"
        " expires_at = now() - interval '1 minute' where id = %s",
        (tx_id,),
    )
