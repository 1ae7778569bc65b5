"""DDL and unmanage_table committed while another session's insert waits
for the table: the waiting call ends the same on both paths."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import make_twins, table_text

DDL = {
    "unmanage": "select resilience.unmanage_table('{t}')",
    "add_column": "alter table {t} add column z int default 7",
    "drop_column": "alter table {t} drop column b",
    "type_change": "alter table {t} alter column b type text using b::text || '!'",
    "rename_table": "alter table {t} rename to {t}_r",
    "drop_default": "alter table {t} alter column b drop default",
}


def _race(dsn: str, table: str, ddl: str, data: dict[str, Any]) -> Any:
    out: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        # the session's plan of the insert exists before the DDL
        warm = b.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        b.execute(
            "select resilience.tx_execute(%s, %s, 'insert', %s)",
            (warm, table, Jsonb({**data, "id": 1})),
        )
        b.execute("select resilience.tx_commit(%s)", (warm,))
        tx = b.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        a.execute("begin")
        a.execute(ddl.replace("{t}", table))
        if table == "slow":
            a.execute(
                "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
                " where relation::text like 'slow%'"
            )

        def insert() -> None:
            try:
                out.append(
                    b.execute(
                        "select resilience.tx_execute(%s, %s, 'insert', %s)",
                        (tx, table, Jsonb(data)),
                    ).fetchone()[0]  # type: ignore[index]
                )
            except psycopg.Error as error:
                out.append(("error", error.sqlstate))

        thread = threading.Thread(target=insert)
        thread.start()
        # commit once b waits for the table's lock (or has given up)
        pid = b.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as watch:
            for _ in range(200):
                waiting = watch.execute(
                    "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)
                ).fetchone()[0]  # type: ignore[index]
                if waiting or not thread.is_alive():
                    break
                time.sleep(0.01)
        a.execute("commit")
        thread.join(10)
        try:
            rolled = b.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
            out.append(rolled.get("success") if isinstance(rolled, dict) else rolled)
        except psycopg.Error as error:
            out.append(("rollback error", error.sqlstate))
    return out


UNMANAGE_RACE = pytest.mark.xfail(
    strict=True,
    reason="unmanage_table committed while a fast-path insert waits for the table:"
    " XX000 'cache lookup failed for function' (the general path inserts, uncaptured);"
    " docs/transactions.md, Limits",
)


def _check(conn: psycopg.Connection[Any], dsn: str, ddl: str) -> None:
    conn.execute("drop table if exists fast, slow, fast_r, slow_r")
    make_twins(conn, "create table {t} (id int primary key, a text, b int default 5)")
    data = {"id": 2, "a": "x", "b": 3}
    seen = {t: _race(dsn, t, DDL[ddl], data) for t in ("fast", "slow")}
    suffix = "_r" if ddl == "rename_table" else ""
    rows = {t: table_text(conn, t + suffix) for t in ("fast", "slow")}
    assert str(seen["fast"]).replace("fast", "T") == str(seen["slow"]).replace("slow", "T"), ddl
    assert rows["fast"] == rows["slow"], ddl


def test_ddl_while_insert_waits(conn: psycopg.Connection[Any], dsn: str) -> None:
    for ddl in sorted(DDL):
        if ddl != "unmanage":
            _check(conn, dsn, ddl)


@UNMANAGE_RACE
def test_unmanage_while_insert_waits(conn: psycopg.Connection[Any], dsn: str) -> None:
    _check(conn, dsn, "unmanage")
