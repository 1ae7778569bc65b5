"""What every benchmark shares: a PostgreSQL server (an embedded one, or the
superuser conninfo in $PGRESILIENCE_BENCH_DSN) and scratch databases on it.
The embedded server is the newest Debian one unless $PGRESILIENCE_PG_BIN names
another installation's bin directory (`scripts/pg-binaries.sh 17` prints one);
every benchmark first prints which server it measures.

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
from pgresilience.embedded import EmbeddedPostgres, find_bin_dir

__all__ = ["create_database", "describe", "drop_database", "scratch_database", "server"]


@contextmanager
def server() -> Iterator[str]:
    """The admin conninfo of the server to measure on."""
    external = os.environ.get("PGRESILIENCE_BENCH_DSN")
    if external:
        describe(external, "PGRESILIENCE_BENCH_DSN")
        yield external
        return
    with EmbeddedPostgres() as pg:
        describe(pg.dsn(), f"embedded, {find_bin_dir()}")
        yield pg.dsn()


def describe(admin_dsn: str, where: str) -> None:
    """Prints the server's version and whether PL/Python works there (without
    it, schema diffs are left to the client: no diff runs at commit)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("create extension if not exists plpython3u")
            plpython = "yes"
        except psycopg.Error:
            plpython = "no (schema diff by the client, none at commit)"
    assert version is not None
    print(f"server: PostgreSQL {version[0]} ({where}); PL/Python: {plpython}", flush=True)


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
