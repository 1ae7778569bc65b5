"""`pgresilience demo`: every feature, step by step, on a real database.

Without a DSN it runs on an embedded temporary PostgreSQL that is removed
afterwards. Given a DSN (explicitly: never ``$DATABASE_URL``), it removes
afterwards what it created there: its tables and schema, its circuit, and
pgresilience itself when it was not installed before (audit rows stay only
where pgresilience stays).
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres
from pgresilience.queries import query

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


DEMO_TABLES = ("demo_profiles", "demo_users")  # dependents first


def _clean_up(dsn: str, was_installed: bool, existed: tuple[bool, ...], say: Say) -> None:
    say("== clean up: removing what the demo created")
    users, profiles, shop = existed
    created = [t for t, e in zip(DEMO_TABLES, (profiles, users), strict=True) if not e]
    if not was_installed:
        for line in installer.uninstall(dsn, force=True):
            say(f"  {line}")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        for table in created:
            if was_installed:
                conn.execute(query("demo_unmanage"), (table, table))
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(table)))
        if not shop:
            conn.execute(query("demo_drop_shop"))
        if was_installed:
            conn.execute(query("demo_drop_circuit"))
    if created:
        say(f"  dropped tables {', '.join(created)}")


def run_demo(dsn: str | None = None, say: Say = print) -> None:
    """Run the demo on ``dsn`` (then clean up), or on a throwaway server."""
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            was_installed = installer.installed_revision(conn) is not None
            row = conn.execute(query("demo_existing")).fetchone()
        assert row is not None
        try:
            _run_on(dsn, say)
        finally:
            _clean_up(dsn, was_installed, tuple(row), say)
        return
    say("== starting an embedded PostgreSQL (removed at the end)")
    with EmbeddedPostgres() as pg:
        _run_on(pg.dsn(), say)
