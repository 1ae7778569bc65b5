"""What every benchmark shares: a PostgreSQL server (an embedded one, or the
superuser conninfo in $PGRESILIENCE_BENCH_DSN) and scratch databases on it.

Benchmarks run as scripts (`python bench/x.py`), so this folder is on sys.path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

__all__ = ["create_database", "drop_database", "scratch_database", "server"]


@contextmanager
def server() -> Iterator[str]:
    """The admin conninfo of the server to measure on."""
    external = os.environ.get("PGRESILIENCE_BENCH_DSN")
    if external:
        yield external
        return
    with EmbeddedPostgres() as pg:
        yield pg.dsn()


def create_database(admin_dsn: str, name: str) -> str:
    """(Re)create an empty database; its conninfo."""
    drop_database(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(admin_dsn: str, name: str | None = None) -> Iterator[str]:
    """A fresh database with pgresilience installed, dropped afterwards."""
    name = name or f"pgr_bench_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, name)
    try:
        installer.install(dsn)
        yield dsn
    finally:
        drop_database(admin_dsn, name)
