"""A PostgREST-like client: every request is one database transaction of the
`authenticator` login, with `role`, `request.jwt.claims`, `request.headers`
and `request.method` set by set_config(..., true), as PostgREST sets them."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from conftest import Server
from psycopg.rows import tuple_row


class Rest:
    """One user (role + JWT subject) talking through PostgREST."""

    def __init__(self, server: Server, database: str, sub: str | None, role: str = "authenticated"):
        self.conn = psycopg.connect(server.dsn(database, user="authenticator"), autocommit=True)
        self.role = role
        self.sub = sub

    def close(self) -> None:
        self.conn.close()

    def request(
        self,
        statement: str,
        params: Any = None,
        *,
        tx: str | None = None,
        headers: str | None = None,
        pre_request: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Run one statement as one request; `tx` sets header x-resilience-tx,
        `headers` sets request.headers verbatim (malformed-header tests)."""
        if headers is None:
            headers = json.dumps({"x-resilience-tx": tx} if tx is not None else {})
        claims = {"role": self.role} | ({"sub": self.sub} if self.sub else {})
        with self.conn.transaction(), self.conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                "select set_config('role', %s, true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.headers', %s, true),"
                " set_config('request.method', 'POST', true)",
                (self.role, json.dumps(claims), headers),
            )
            if pre_request:
                cur.execute("select resilience.tx_pre_request()")
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def rpc(self, function: str, *args: Any, tx_header: str | None = None) -> Any:
        """`select resilience.<function>(args...)`, as supabase.rpc() would."""
        placeholders = ", ".join(["%s"] * len(args))
        statement = "select resilience." + function + "(" + placeholders + ")"  # noqa: S608
        return self.request(statement, args, tx=tx_header)[0][0]


def table_text(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Every row of `table` as row::text, sorted: the oracle's view of a table."""
    rows = conn.execute(
        "select t::text from (select * from only " + table + ") as t order by 1"  # noqa: S608
    ).fetchall()
    return [r[0] for r in rows]
