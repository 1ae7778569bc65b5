"""Twin-table oracle for tx_execute's generated insert (_insert_row_<n>):
table `fast` keeps it, table `slow` has it removed from its descriptor, so
every call on `slow` takes the general path. Same calls on both, compared."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb


def make_twins(
    conn: psycopg.Connection[Any], ddl: str, *, manage: bool = True, fast: bool = True
) -> None:
    """``ddl`` with ``{t}`` for the table name, run for `fast` and `slow`."""
    for name in ("fast", "slow"):
        conn.execute(ddl.replace("{t}", name))
        if manage:
            conn.execute("select resilience.manage_table(%s)", (name,))
    if manage:
        strip(conn, fast=fast)


def strip(conn: psycopg.Connection[Any], *, fast: bool = True) -> None:
    conn.execute(
        "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
        " where relation = 'slow'::regclass"
    )
    assert has_fast(conn, "fast") == fast


def has_fast(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "select descriptor ? 'insert_row' from resilience.managed_tables"
        " where relation = %s::regclass",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def run(
    conn: psycopg.Connection[Any], table: str, rows: Iterable[Any], *, rollback: bool = True
) -> dict[str, Any]:
    """Begin a logical transaction, insert each row (one call each), and
    return what was observed: results/SQLSTATEs, table rows, images, audit
    and the table after tx_rollback."""
    before = table_text(conn, table)
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
    results: list[Any] = []
    for data in rows:
        try:
            out = conn.execute(
                "select resilience.tx_execute(%s, %s, 'insert', %s)",
                (tx, table, None if data is None else Jsonb(data)),
            ).fetchone()[0]  # type: ignore[index]
            results.append(out)
        except psycopg.Error as error:
            results.append(("error", error.sqlstate))
    seen: dict[str, Any] = {
        "results": results,
        "rows": table_text(conn, table),
        "images": [
            {k: v for k, v in r[0].items() if k not in ("table", "seq")}
            for r in conn.execute("select * from resilience.tx_images(%s)", (tx,)).fetchall()
        ],
        "audit": [
            (r[0], r[1], r[2], {k: v for k, v in r[3].items() if k not in ("duration_ms", "table")})
            for r in conn.execute(
                "select event, actor_role, actor_sub, detail from resilience.audit_log"
                " where tx_id = %s order by id",
                (tx,),
            ).fetchall()
        ],
    }
    if rollback:
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
        seen["after_rollback"] = table_text(conn, table)
        assert seen["after_rollback"] == before
    return seen


def table_text(conn: psycopg.Connection[Any], table: str) -> list[str]:
    statement = sql.SQL("select t::text from {} as t order by 1").format(sql.Identifier(table))
    return [r[0] for r in conn.execute(statement).fetchall()]


def rename(seen: dict[str, Any]) -> str:
    """The observation as text with the table name neutralised."""
    return json.dumps(seen, sort_keys=True, default=str).replace("slow", "T").replace("fast", "T")


def compare(conn: psycopg.Connection[Any], rows: list[Any], **kw: Any) -> dict[str, Any]:
    a = run(conn, "fast", rows, **kw)
    b = run(conn, "slow", rows, **kw)
    assert rename(a) == rename(b)
    return a
