"""The Python helper `ref(index, column)` writes the `$ref` the database
reads as that column (docs/batch_and_security.md, "References")."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience import TransactionManager


def test_python_ref_to_a_column_named_like_a_row_number(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """docs/batch_and_security.md: a column whose name starts with digits
    and a dot needs the explicit row form. A user writing `ref(0, "2.x")`
    got "0.2.x", read as row 2, column x: an error here, and with three rows
    the wrong value, silently."""
    from pgresilience.transactions.batch import operation, ref

    conn.execute('create table odd (id int primary key, "2.x" text, x text)')
    rows = [{"id": i, "2.x": f"dotted{i}", "x": f"plain{i}"} for i in range(3)]
    with TransactionManager(dsn, pool_size=1) as tm:
        batch = tm.run(
            [
                operation("odd", "insert", rows),
                operation("odd", "insert", {"id": 10, "x": ref(0, "2.x")}),
                operation("odd", "insert", {"id": 11, "x": ref(0, "2.x", row=1)}),
                operation("odd", "insert", {"id": 12, "x": ref(0, "x", row=2)}),
            ]
        )
    assert batch.success, batch.error
    assert [r.data[0]["x"] for r in batch.results[1:]] == ["dotted0", "dotted1", "plain2"]
    assert ref(0, "id") == {"$ref": "0.id"}  # the common forms are unchanged
    assert ref(0, "2") == {"$ref": "0.2"}
