"""Header mode (x-resilience-tx, as PostgREST sets it) lets a client send
statements tx_execute cannot build: keys swapped or shifted in one UPDATE,
ON CONFLICT, MERGE, writable CTEs, moves between partitions in both
directions at once. Each must roll back to the very rows before it."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, rows_text

SCHEMA = """
create table s (
    id int primary key deferrable initially deferred,
    v text unique deferrable initially deferred,
    n int,
    w text unique
);
insert into s select g, 'v' || g, g, 'w' || g from generate_series(1, 6) as g;
select resilience.manage_table('s');
create table pp (id int, k int, v text, primary key (id, k)) partition by list (k);
create table pp1 partition of pp for values in (1);
create table pp2 partition of pp for values in (2);
insert into pp values (1, 1, 'a'), (2, 2, 'b'), (3, 1, 'c');
select resilience.manage_table('pp');
"""

STATEMENTS = [
    ("s", "update s set id = 3 - id where id in (1, 2)"),
    ("s", "update s set id = id + 1"),
    ("s", "update s set v = case id when 3 then 'v4' when 4 then 'v3' else v end"),
    ("s", "insert into s values (1, 'x', 0, 'w1'), (9, 'new', 0, 'w9')"
     " on conflict (w) do update set n = 7"),
    ("s", "with d as (delete from s where id = 5 returning *)"
     " insert into s select id + 100, v || 'x', n, w || 'x' from d"),
    ("s", "merge into s using (values (3, 'm'), (50, 'q')) as src (id, v) on s.id = src.id"
     " when matched then update set v = src.v"
     " when not matched then insert values (src.id, src.v, 0, src.v)"),
    ("s", "delete from s where n % 2 = 0"),
    ("pp", "update pp set k = 3 - k"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "statement"), STATEMENTS)
def test_statement_in_header_mode_rolls_back(
    conn: psycopg.Connection[Any], table: str, statement: str
) -> None:
    conn.execute(SCHEMA)
    key = "id, k" if table == "pp" else "id"
    before = rows_text(conn, table, key)
    tx = begin(conn)
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        conn.execute(statement)  # the test's own fixed statements
    assert rows_text(conn, table, key) != before
    result = call(conn, "tx_rollback", tx)
    assert result["success"] is True and result["conflicts"] == []
    assert rows_text(conn, table, key) == before
