"""tx_run at scale: a batch of 10,000 operations, each referring to the row
the previous one wrote, runs in seconds (it took over a minute: the results
so far were a jsonb value copied whole by every operation, and an unmanaged
table's descriptor was read from the catalog once per operation), and the
same batch failing at its very last operation writes nothing."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

N = 10_000
# Measured on 2 shared cores: about 3.5 s each (70 s before the fix). The
# bound leaves room for a loaded machine while failing the quadratic cost.
BOUND_SECONDS = 25.0


def _chain(n: int) -> list[dict[str, Any]]:
    """A linked list of n rows: each names the id of the row written before."""
    ops: list[dict[str, Any]] = [{"table": "chain", "operation": "insert", "data": {"v": "head"}}]
    for i in range(1, n):
        ops.append(
            {
                "table": "chain",
                "operation": "insert",
                "data": {"parent": {"$ref": f"{i - 1}.id"}, "v": f"n{i}"},
            }
        )
    return ops


@pytest.mark.timeout(120)
def test_tx_run_ten_thousand_chained_operations_in_seconds(conn: psycopg.Connection[Any]) -> None:
    """A user would see a 10,000-row import through tx_run take minutes (or
    hit the request timeout of PostgREST); a failure at the last operation
    must still undo the 9,999 before it, with the SQLSTATE and index."""
    conn.execute(
        "create table chain (id bigint generated always as identity primary key,"
        " parent bigint references chain (id), v text not null)"
    )
    ops = _chain(N)
    started = time.monotonic()
    row = conn.execute(
        "select jsonb_array_length(r -> 'results'), r -> 'results' -> -1 -> 'data' -> 0"
        " from resilience.tx_run(%s) as r",
        (Jsonb(ops),),
    ).fetchone()
    elapsed = time.monotonic() - started
    assert row is not None
    assert row[0] == N
    assert elapsed < BOUND_SECONDS, f"{N} operations took {elapsed:.1f} s"
    # Every row points at the one written just before it.
    broken = conn.execute(
        "select count(*) from chain c where c.v <> 'head'"
        " and c.parent is distinct from (select max(p.id) from chain p where p.id < c.id)"
    ).fetchone()
    assert broken == (0,)
    assert row[1]["parent"] == row[1]["id"] - 1

    ops[-1]["data"]["no_such_column"] = 1
    started = time.monotonic()
    with pytest.raises(psycopg.errors.UndefinedColumn) as failed:
        conn.execute("select resilience.tx_run(%s)", (Jsonb(ops),))
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_SECONDS, f"the failing batch took {elapsed:.1f} s"
    assert failed.value.diag.message_primary is not None
    assert failed.value.diag.message_primary.startswith(
        f"tx_run operation {N - 1} (insert on chain)"
    )
    assert conn.execute("select count(*) from chain").fetchone() == (N,)  # the first batch only
