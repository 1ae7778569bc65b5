"""Every statement the client sends, named, in ``queries/*.sql``.

A file holds blocks that start with a ``-- name --`` line, then an optional
comment line saying what it does, then the SQL. Names are unique across files.
Alembic revisions keep their SQL the same way (``revision_sql``).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path

from psycopg import sql

__all__ = ["query", "all_queries", "revision_sql", "sql_blocks"]

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


def sql_blocks(text: str) -> dict[str, str]:
    """The ``-- name --`` blocks of one file, by name."""
    parts = _HEADER.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            raise ValueError(f"block {name!r} defined twice")
        blocks[name] = body.strip()
    return blocks


def revision_sql(revision_file: str) -> dict[str, str]:
    """An Alembic revision's SQL: the file beside it with the same name and
    suffix ``.sql``, blocks ``upgrade`` and ``downgrade``."""
    path = Path(revision_file).with_suffix(".sql")
    blocks = sql_blocks(path.read_text(encoding="utf-8"))
    if set(blocks) != {"upgrade", "downgrade"}:
        raise ValueError(
            f"{path.name}: blocks upgrade and downgrade expected, got {sorted(blocks)}"
        )
    return blocks


@functools.cache
def all_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = importlib.resources.files("pgresilience") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, body in sql_blocks(entry.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} defined twice")
            queries[name] = body
    return queries


def query(name: str) -> sql.SQL:
    """The named statement, ready for ``cursor.execute(query(name), params)``."""
    # The text comes from our own files, never from input: mypy treats it as a
    # plain str, while psycopg's stubs ask for a LiteralString.
    return sql.SQL(all_queries()[name])
