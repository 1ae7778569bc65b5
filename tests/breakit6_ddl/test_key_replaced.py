"""Promise (docs/transactions.md, "DDL on managed tables" and "Claims"): a
primary key change cannot be regenerated while images exist (RZ007 for
captured writes until those transactions finish; the DDL goes through),
and a claimed row stays off limits to every other writer (55P03) until
commit or rollback. Broken by a key replaced with one on *other columns of
the same type*: the images' keys (and so the claims) were read as values of
the new key, guarding the wrong rows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import call, rows_text, sqlstate_of

# id and alt are both unique integers, crossed: id 1 has alt 2, id 2 has alt 1.
TABLE = """
create table t (id integer primary key, alt integer not null unique, v text);
insert into t values (1, 2, 'a'), (2, 1, 'b'), (3, 3, 'c');
select resilience.manage_table('t');
"""

REPLACE_KEY = "alter table t drop constraint t_pkey, add primary key (alt)"


@pytest.fixture
def t(conn: psycopg.Connection[Any]) -> str:
    conn.execute(TABLE)
    return "t"


def test_key_replaced_by_another_column_keeps_the_claims_on_the_claimed_rows(
    conn: psycopg.Connection[Any], t: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, t, "update", {"v": "x"}, {"id": 1})
    conn.execute(REPLACE_KEY)

    # Captured writes: the capture cannot be regenerated now.
    assert sqlstate_of(call, conn, "tx_execute", tx, t, "update", {"v": "y"}, {"alt": 1}) == "RZ007"
    # The claimed row (id 1) is still off limits; the row whose new key
    # equals the old claim value (alt 1, id 2) is not.
    assert sqlstate_of(conn.execute, "update t set v = 'p' where id = 1") == "55P03"
    conn.execute("update t set v = 'q' where id = 2")

    assert call(conn, "tx_rollback", tx)["restored_rows"] == 1
    assert rows_text(conn, t) == ["(1,2,a)", "(2,1,q)", "(3,3,c)"]

    # Once no images are held, the next captured write regenerates.
    tx2 = call(conn, "tx_begin")
    call(conn, "tx_execute", tx2, t, "update", {"v": "z"}, {"alt": 2})
    assert sqlstate_of(conn.execute, "update t set v = 'p' where id = 1") == "55P03"
    call(conn, "tx_rollback", tx2)
    assert rows_text(conn, t) == ["(1,2,a)", "(2,1,q)", "(3,3,c)"]


def test_key_replaced_by_another_column_of_an_inserted_row_keeps_its_claim(
    conn: psycopg.Connection[Any], t: str
) -> None:
    # An insert's undo deletes by key: read as the new key, it found no row,
    # called it already undone, and the inserted row stayed.
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, t, "insert", {"id": 10, "alt": 20, "v": "new"})
    conn.execute(REPLACE_KEY)

    assert sqlstate_of(conn.execute, "delete from t where id = 10") == "55P03"
    assert call(conn, "tx_rollback", tx)["restored_rows"] == 1
    assert rows_text(conn, t) == ["(1,2,a)", "(2,1,b)", "(3,3,c)"]


def test_key_replaced_where_every_imaged_row_has_equal_keys_regenerates_at_once(
    conn: psycopg.Connection[Any], t: str
) -> None:
    # Row 3 has id = alt: its image means the same row under either key, so
    # the capture regenerates and the transaction goes on.
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, t, "update", {"v": "x"}, {"id": 3})
    conn.execute(REPLACE_KEY)

    call(conn, "tx_execute", tx, t, "update", {"v": "y"}, {"alt": 1})
    assert sqlstate_of(conn.execute, "update t set v = 'p' where id = 3") == "55P03"
    assert sqlstate_of(conn.execute, "update t set v = 'p' where id = 2") == "55P03"
    assert call(conn, "tx_rollback", tx)["restored_rows"] == 2
    assert rows_text(conn, t) == ["(1,2,a)", "(2,1,b)", "(3,3,c)"]


def test_key_update_then_add_column_still_regenerates(
    conn: psycopg.Connection[Any], t: str
) -> None:
    # A key change leaves a claim of the old key (no image of its own): an
    # unrelated regeneration must still take place, and the old key stay
    # claimed.
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, t, "update", {"id": 30}, {"id": 3})
    conn.execute("alter table t add column z integer")

    call(conn, "tx_execute", tx, t, "update", {"z": 1}, {"id": 1})
    assert sqlstate_of(conn.execute, "insert into t values (3, 33, 'other')") == "55P03"
    # Images taken before the new column conflict, as documented; force
    # restores them with the new column null.
    assert sqlstate_of(call, conn, "tx_rollback", tx) == "RZ005"
    call(conn, "tx_rollback", tx, None, True)
    assert rows_text(conn, t) == ["(1,2,a,)", "(2,1,b,)", "(3,3,c,)"]
