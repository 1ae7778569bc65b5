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


@pytest.mark.parametrize("key_type", sorted(CASES))
def test_a_binary_only_key_change_rolls_back_to_the_old_binary_key(
    keyed: tuple[Rest, Any], key_type: str
) -> None:
    user, admin = keyed
    old, new = CASES[key_type]
    admin.execute(
        "create table k (id " + key_type + " primary key, v text);"  # noqa: S608
        " grant select, insert, update, delete on k to authenticated;"
        " select resilience.manage_table('k')"
    )
    admin.execute("insert into k values (%s, 'a')", (old,))
    before = table_text(admin, "k")
    tx = str(user.rpc("tx_begin", 60000))
    user.request("update k set id = %s, v = 'b' where id = %s", (new, old), tx=tx)
    changed = table_text(admin, "k")
    assert changed != before
    user.request("delete from k where id = %s", (old,), tx=tx)
    user.request("insert into k values (%s, 'c')", (new,), tx=tx)
    user.request("update k set id = %s where id = %s", (old, new), tx=tx)
    result = user.rpc("tx_rollback", tx)
    assert result["success"] is True, result
    assert table_text(admin, "k") == before
