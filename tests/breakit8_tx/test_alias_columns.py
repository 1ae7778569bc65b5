"""Column names equal to the aliases and variables of the statements
tx_execute, tx_run and the generated lock-by-key function build (t, d, m, w,
j, o, c, l, excluded, p_match, locked_rows, ...): every operation, matched
on every such column, then rolled back to the copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

NAMES = [
    "d", "m", "w", "j", "o", "c", "l", "e", "u", "k", "i", "b", "a", "n", "s", "r",
    "excluded", "p_tx", "p_match", "locked_rows", "locked_count", "v_tableoids", "v_ctids",
    "results", "operation", "descriptor", "names", "statement", "rows_json", "row_count",
]  # fmt: skip


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    columns = ", ".join('"' + name + '" integer' for name in NAMES)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute('create table "t" ("t" integer primary key, ' + columns + ")")
        admin.execute(
            'insert into "t" select i, '
            + ", ".join(["i"] * len(NAMES))  # noqa: S608
            + " from generate_series(1, 3) as i"
        )
        admin.execute('grant select, insert, update, delete on "t" to authenticated')
        admin.execute("select resilience.manage_table('t')")
        admin.execute("create table snapshot as select * from t")
        user = Rest(server, database, sub="aliases")
        try:
            yield user, admin
        finally:
            user.close()


def test_every_operation_matched_on_alias_named_columns(app: tuple[Rest, Any]) -> None:
    user, admin = app
    tx = str(user.rpc("tx_begin", 60000))

    def execute(operation: str, data: Any, match: Any) -> Any:
        return user.rpc(
            "tx_execute", tx, "t", operation,
            None if data is None else json.dumps(data),
            None if match is None else json.dumps(match),
        )  # fmt: skip

    row = {"t": 10} | {name: 10 for name in NAMES}
    assert execute("insert", row, None)["count"] == 1
    assert (
        execute("upsert", [row | {"d": 11}, {"t": 11} | dict.fromkeys(NAMES, 5)], None)["count"]
        == 2
    )
    assert execute("lock", None, {"t": 1})["count"] == 1  # the lock-by-key function
    for name in NAMES:
        assert execute("lock", None, {name: 2})["count"] == 1, name
        assert execute("update", {name: 20}, {name: 2, "t": 2})["count"] == 1, name
        assert execute("update", {name: 2}, {name: 20})["count"] == 1, name
    assert execute("delete", None, {"excluded": 3, "p_match": 3})["count"] == 1
    batch = user.request(
        "select resilience.tx_run(%s)",
        (
            json.dumps(
                [
                    {"table": "t", "operation": "insert", "data": {"t": 30, "w": 1}},
                    {
                        "table": "t",
                        "operation": "update",
                        "data": {"j": {"$ref": "0.w"}},
                        "match": {"t": {"$ref": "0.t"}},
                    },
                    {"table": "t", "operation": "lock", "match": {"locked_rows": None}},
                ]
            ),
        ),  # fmt: skip
        tx=tx,
    )[0][0]
    assert [r["count"] for r in batch["results"]] == [1, 1, 1]
    assert user.rpc("tx_rollback", tx)["success"] is True
    assert table_text(admin, "t") == table_text(admin, "snapshot")
