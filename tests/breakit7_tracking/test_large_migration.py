"""A very large migration is ONE version with exactly its changes: hundreds of
tables with 63-byte names (multibyte, so PostgreSQL's generated key and
index names are truncated at a character boundary), then one migration
renaming, altering and dropping them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from .conftest import assert_no_duplicate_records, changes_of, last_version, refresh_finds_nothing

pytestmark = pytest.mark.plpython

COUNT = 120


def _name(i: int, letter: str) -> str:
    name = f"{i:03d}" + letter * 30  # 3 + 30 * 2 bytes = 63 bytes
    assert len(name.encode()) == 63
    return name


def test_large_migration_is_one_version_with_exactly_its_changes(
    fresh_db: Callable[[], str],
) -> None:
    dsn = fresh_db()
    with psycopg.connect(dsn) as conn:
        conn.execute('create schema "select"')
        for i in range(COUNT):
            conn.execute(
                sql.SQL(
                    'create table {} ("name" integer primary key, "type" text unique,'
                    ' "columns" integer references {} ("name"))'
                ).format(
                    sql.Identifier("select", _name(i, "ü")), sql.Identifier("select", _name(0, "ü"))
                )
            )
        conn.commit()
    first = last_version(dsn)
    assert first["version"] == 2
    assert Counter(c["type"] for c in changes_of(dsn, 2)) == {"table_added": COUNT}

    with psycopg.connect(dsn) as conn:
        for i in range(1, COUNT):
            table = sql.Identifier("select", _name(i, "ü"))
            if i % 4 == 0:
                conn.execute(sql.SQL("drop table {}").format(table))
            elif i % 4 == 1:
                conn.execute(
                    sql.SQL("alter table {} rename to {}").format(
                        table, sql.Identifier(_name(i, "é"))
                    )
                )
            elif i % 4 == 2:
                conn.execute(sql.SQL('alter table {} add column "ключ" bigint').format(table))
            else:
                conn.execute(sql.SQL('alter table {} drop column "columns"').format(table))
        conn.commit()
    assert last_version(dsn)["version"] == 3
    changes = changes_of(dsn, 3)
    assert_no_duplicate_records(changes)
    per_kind = COUNT // 4
    assert Counter((c["type"], c["severity"]) for c in changes) == {
        ("table_dropped", "critical"): per_kind - 1,  # 0 is kept: the others reference it
        ("table_renamed", "high"): per_kind,
        ("column_added", "low"): per_kind,
        ("column_dropped", "critical"): per_kind,
        ("constraint_dropped", "medium"): per_kind,  # the dropped column's foreign key
    }
    assert refresh_finds_nothing(dsn) == []
