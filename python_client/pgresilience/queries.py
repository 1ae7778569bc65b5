"""Every statement the client sends, named, in ``queries/*.sql``.

A file holds blocks that start with a ``-- name --`` line, then an optional
comment line saying what it does, then the SQL. Names are unique across files.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

from psycopg import sql

__all__ = ["query", "all_queries"]

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


@functools.cache
def all_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = importlib.resources.files("pgresilience") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _HEADER.split(entry.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"query {name!r} defined twice")
            queries[name] = body.strip()
    return queries


def query(name: str) -> sql.SQL:
    """The named statement, ready for ``cursor.execute(query(name), params)``."""
    # The text comes from our own files, never from input: mypy treats it as a
    # plain str, while psycopg's stubs ask for a LiteralString.
    return sql.SQL(all_queries()[name])
