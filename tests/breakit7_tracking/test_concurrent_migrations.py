"""Concurrent migrations from several sessions: version order is commit order,
and each version's hash covers every version before it (docs: "Folds are
serialized by an advisory lock taken at commit")."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from .conftest import refresh_finds_nothing

pytestmark = pytest.mark.plpython


def test_concurrent_migrations_version_order_is_commit_order(fresh_db: Callable[[], str]) -> None:
    """The migration that starts first but commits last gets the later version."""
    dsn = fresh_db()
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        first.execute('create table public."first" (id integer)')
        second.execute('create table public."second" (id integer)')
        second.commit()
        first.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select version, tables from resilience.schema_versions where origin = 'ddl'"
            " order by version"
        ).fetchall()
    assert [tables for _, tables in rows] == [["public.second"], ["public.first"]]
    assert refresh_finds_nothing(dsn) == []


def test_concurrent_migrations_each_hash_covers_the_earlier_versions(
    fresh_db: Callable[[], str],
) -> None:
    """Three sessions commit migrations at once, one new table each. Version n's
    hash must be the hash of the schema made by versions 1..n: SHA-256 over
    the sorted group hashes of the tables they created (docs, "Schema hash")."""
    dsn = fresh_db()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with psycopg.connect(dsn) as conn:
                for i in range(6):
                    conn.execute(
                        sql.SQL("create table public.{} (id integer primary key, v text)").format(
                            sql.Identifier(f"w{n}.t{i}")
                        )
                    )
                    conn.commit()
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        versions = conn.execute(
            "select version, hash, tables from resilience.schema_versions"
            " where origin = 'ddl' order by version"
        ).fetchall()
        group_hash = dict(
            conn.execute(
                "select n.nspname || '.' || c.relname, g.hash from resilience.schema_groups as g"
                " join pg_class as c on c.oid = g.group_oid"
                " join pg_namespace as n on n.oid = c.relnamespace"
            ).fetchall()
        )
    assert len(versions) == 18
    seen: list[str] = []
    for _, version_hash, tables in versions:
        assert len(tables) == 1
        seen.append(group_hash[tables[0]])
        expected = hashlib.sha256("".join(sorted(seen)).encode()).hexdigest()
        assert version_hash == expected
    assert refresh_finds_nothing(dsn) == []
