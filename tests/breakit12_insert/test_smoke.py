from __future__ import annotations

from typing import Any

import psycopg

from .conftest import compare, make_twins


def test_basic(conn: psycopg.Connection[Any]) -> None:
    make_twins(
        conn,
        "create table {t} (id int generated always as identity primary key,"
        " a text, b int default 7)",
    )
    seen = compare(
        conn, [{"a": "x", "b": 1}, {"a": "y"}, {"b": 2}, {"a": 1, "b": "z"}, {"id": 5, "a": "q"}]
    )
    assert [r[1] if isinstance(r, tuple) else r["count"] for r in seen["results"]] == [
        1,
        1,
        1,
        "22P02",
        "428C9",
    ]
    assert len(seen["images"]) == 3 and len(seen["audit"]) >= 4


def test_fast_path_is_taken(conn: psycopg.Connection[Any], dsn: str) -> None:
    """The harness's premise: `fast` runs _insert_row_<n>, `slow` does not."""
    make_twins(conn, "create table {t} (id int primary key, a text)")
    calls = {}
    for table in ("fast", "slow"):
        with psycopg.connect(dsn) as session:
            session.execute("set local track_functions = 'pl'")
            tx = session.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
            session.execute(
                'select resilience.tx_execute(%s, %s, \'insert\', \'{"id": 1, "a": "x"}\')',
                (tx, table),
            )
            calls[table] = session.execute(
                "select array_agg(regexp_replace(funcname, '[0-9]+$', 'N') order by funcname)"
                " from pg_stat_xact_user_functions where funcname ~ '^_(insert_row|execute_sql)'"
            ).fetchone()[0]  # type: ignore[index]
    assert calls == {"fast": ["_insert_row_N"], "slow": ["_execute_sql", "_insert_row_sql"]}
