"""Calls made the way PostgREST makes them.

PostgREST logs in once as `authenticator` and runs every request as one
database transaction: `set local role <role from the JWT>`, the JWT claims in
`request.jwt.claims` (transaction-local), then the statement. A `Session`
does exactly that for each call, so the tests see what a Supabase client sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb


class Session:
    """One client: a role and, optionally, a JWT subject."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        role: str,
        sub: str | None,
        *,
        search_path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.conn = conn
        self.role = role
        self.sub = sub
        self.search_path = search_path  # e.g. an attacker's schema first
        self.headers = headers  # request.headers, e.g. {"x-resilience-tx": id}

    @contextmanager
    def request(self) -> Iterator[psycopg.Connection[Any]]:
        """One PostgREST request: a database transaction with role and claims set."""
        with self.conn.transaction():
            self.conn.execute(sql.SQL("set local role {}").format(sql.Identifier(self.role)))
            claims = {"role": self.role} | ({"sub": self.sub} if self.sub is not None else {})
            self.conn.execute(
                "select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),)
            )
            if self.headers is not None:
                self.conn.execute(
                    "select set_config('request.headers', %s, true)", (json.dumps(self.headers),)
                )
            if self.search_path is not None:
                self.conn.execute("select set_config('search_path', %s, true)", (self.search_path,))
            yield self.conn

    def query(self, statement: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        with self.request() as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def rpc(self, function: str, **arguments: Any) -> Any:
        """`select resilience.<function>(name => value, ...)`; dicts and lists go as jsonb."""
        return self.rpc_in("resilience", function, **arguments)

    def rpc_in(self, schema: str, function: str, **arguments: Any) -> Any:
        named = sql.SQL(", ").join(
            sql.SQL("{} => %s").format(sql.Identifier(name)) for name in arguments
        )
        statement = sql.SQL("select {}.{}({})").format(
            sql.Identifier(schema), sql.Identifier(function), named
        )
        values = [Jsonb(v) if isinstance(v, dict | list) else v for v in arguments.values()]
        rows = self.query(statement, values)
        return rows[0][0]

    def rpc_set(self, function: str, **arguments: Any) -> list[Any]:
        """For set-returning functions: `select * from resilience.<function>(...)`."""
        named = sql.SQL(", ").join(
            sql.SQL("{} => %s").format(sql.Identifier(name)) for name in arguments
        )
        statement = sql.SQL("select * from resilience.{}({})").format(
            sql.Identifier(function), named
        )
        values = [Jsonb(v) if isinstance(v, dict | list) else v for v in arguments.values()]
        return [row[0] for row in self.query(statement, values)]
