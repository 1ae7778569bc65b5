"""Primary keys whose equality is coarser than their binary value (numeric
scale, float -0, interval '1 day' vs '24 hours', text under a case-folding
key), changed in header mode to an equal-but-different value, then rolled
back: the row::text oracle must see the very key it had."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

CASES = {
    "numeric": ("1.0", "1.00"),
    "double precision": ("0", "-0"),
    "interval": ("1 day", "24 hours"),
    "timestamptz": ("2000-01-01 00:00:00+00", "2000-01-01 01:00:00+01"),
    "jsonb": ('{"a": 1.0}', '{"a": 1.00}'),
    "int4range": ("[1,3)", "[1,2]"),
}


@pytest.fixture
def keyed(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("set timezone = 'UTC'")
        user = Rest(server, database, sub="keys")
        try:
            yield user, admin
        finally:
            user.close()


def test_a_binary_only_key_change_rolls_back_to_the_old_binary_key(
    keyed: tuple[Rest, Any],
) -> None:
    user, admin = keyed
    for number, key_type in enumerate(sorted(CASES)):
        old, new = CASES[key_type]
        table = f"k{number}"
        admin.execute("create table " + table + " (id " + key_type + " primary key, v text)")
        admin.execute("grant select, insert, update, delete on " + table + " to authenticated")
        admin.execute("insert into " + table + " values (%s, 'a')", (old,))  # noqa: S608
        admin.execute("select resilience.manage_table(%s)", (table,))
        before = table_text(admin, table)
        tx = str(user.rpc("tx_begin", 60000))
        user.request("update " + table + " set id = %s, v = 'b' where id = %s", (new, old), tx=tx)
        assert table_text(admin, table) != before, key_type
        user.request("delete from " + table + " where id = %s", (old,), tx=tx)
        user.request("insert into " + table + " values (%s, 'c')", (new,), tx=tx)
        user.request("update " + table + " set id = %s where id = %s", (old, new), tx=tx)
        result = user.rpc("tx_rollback", tx)
        assert result["success"] is True, (key_type, result)
        assert table_text(admin, table) == before, key_type
