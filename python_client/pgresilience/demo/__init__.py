"""`pgresilience demo`: every feature, step by step, on a real database.

Without a DSN it runs on an embedded temporary PostgreSQL that is removed
afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

__all__ = ["run_demo"]

Say = Callable[[str], None]


def _steps() -> list[tuple[str, Callable[[str, Say], None]]]:
    # Imported here so that each step loads only what it needs.
    from pgresilience.demo import breakers, schema, transactions

    return [
        ("logical transactions: a signup rolled back across calls", transactions.run),
        ("schema tracking: a migration watched live", schema.run),
        ("circuit breakers: a flaky AI endpoint", breakers.run),
    ]


def _run_on(dsn: str, say: Say) -> None:
    import psycopg

    from pgresilience.status import status_lines

    say("== install")
    for line in installer.install(dsn).lines():
        say(f"  {line}")
    say("== status")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for line in status_lines(conn):
            say(f"  {line}")
    for title, step in _steps():
        say(f"== {title}")
        step(dsn, lambda line: say(f"  {line}"))


def run_demo(dsn: str | None = None, say: Say = print) -> None:
    dsn = dsn or os.environ.get("DATABASE_URL")
    if dsn:
        _run_on(dsn, say)
        return
    say("== starting an embedded PostgreSQL (removed at the end)")
    with EmbeddedPostgres() as pg:
        _run_on(pg.dsn(), say)
