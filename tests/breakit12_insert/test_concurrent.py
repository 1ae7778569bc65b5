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
        time.sleep(0.3)
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


@pytest.mark.parametrize(
    "ddl", [pytest.param(d, marks=UNMANAGE_RACE) if d == "unmanage" else d for d in sorted(DDL)]
)
def test_ddl_while_insert_waits(conn: psycopg.Connection[Any], dsn: str, ddl: str) -> None:
    make_twins(conn, "create table {t} (id int primary key, a text, b int default 5)")
    data = {"id": 2, "a": "x", "b": 3}
    seen = {t: _race(dsn, t, DDL[ddl], data) for t in ("fast", "slow")}
    name = (
        {"fast": "fast_r", "slow": "slow_r"}
        if ddl == "rename_table"
        else {"fast": "fast", "slow": "slow"}
    )
    rows = {t: table_text(conn, name[t]) for t in ("fast", "slow")}
    assert str(seen["fast"]).replace("fast", "T") == str(seen["slow"]).replace("slow", "T")
    assert rows["fast"] == rows["slow"]
