"""The drift check is exact (DESIGN.md section 1, "Rollback"): a row
changed behind the claims (here: the table's triggers disabled by its
owner) to a value that compares EQUAL but is not the same (1.0 vs 1.00,
0 vs -0, json whitespace, a case-only change under a case-insensitive
collation, the last byte of a TOASTed text) is a conflict: RZ005, nothing
restored; with force the before-image comes back exactly."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import begin, call, execute, rows_text, sqlstate_of

SCHEMA = """
create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
create table d (
    id int primary key, n numeric, f float8, j json, jb jsonb, c text collate ci,
    big text, r numrange, ts timestamptz
);
insert into d values (1, 1.0, 0, '{"a":1}', '{"a": 1.0}', 'Abc',
    (select string_agg(md5(g::text), '') from generate_series(1, 40000) as g) || 'x',
    '[1.0,2)', '2020-01-01 00:00:00+00');
select resilience.manage_table('d');
"""

# column -> a value equal to the stored one under the type's = but not the same
LOOK_ALIKES = {
    "n": "1.00",
    "f": "-0",
    "j": '{"a": 1}',
    "jb": '{"a": 1.00}',
    "c": "ABC",
    "big": None,  # the last character changed, see below
    "r": "[1.00,2)",
}


@pytest.mark.parametrize("column", sorted(LOOK_ALIKES))
def test_a_look_alike_change_behind_the_claims_is_a_conflict(
    conn: psycopg.Connection[Any], column: str
) -> None:
    conn.execute(SCHEMA)
    before = rows_text(conn, "d", "id")
    tx = begin(conn)
    execute(conn, tx, "d", "update", {"ts": "2021-01-01T00:00:00Z"}, {"id": 1})
    written = rows_text(conn, "d", "id")
    target = sql.Identifier(column)
    value = sql.Literal(LOOK_ALIKES[column])
    if column == "big":
        change = sql.SQL("update d set big = left(big, -1) || 'y' where id = 1")
    else:
        change = sql.SQL("update d set {} = {}::{} where id = 1").format(
            target,
            value,
            sql.SQL(
                conn.execute(
                    "select format_type(atttypid, atttypmod) from pg_attribute"
                    " where attrelid = 'd'::regclass and attname = %s",
                    (column,),
                ).fetchone()[0]  # type: ignore[index]
            ),
        )
    conn.execute("alter table d disable trigger user")
    conn.execute(change)
    conn.execute("alter table d enable trigger user")
    drifted = rows_text(conn, "d", "id")
    assert drifted != written
    assert sqlstate_of(call, conn, "tx_rollback", tx) == "RZ005"
    assert rows_text(conn, "d", "id") == drifted
    forced = call(conn, "tx_rollback", tx, "overwrite", True)
    assert forced["success"] is True and len(forced["conflicts"]) == 1
    assert rows_text(conn, "d", "id") == before
