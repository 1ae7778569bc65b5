"""Oracle over keys and names: a composite primary key of a text under a
nondeterministic (case-insensitive ICU) collation and an int, both columns
named like variables of the generated SQL, in a schema and table whose
names need quoting, with every other column named like something of ours.
Key changes include case-only ones ('A' -> 'a', equal under the key's
collation, different bytes): the rollback must give back the very bytes."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from .conftest import rows_text
from .oracle import Step, check_scenario

HOSTILE = ["t", "d", "m", "w", "j", "o", "c", "n", "i", "e", "u", "x", "h", "k1", "c1", "b",
           "a", "seq", "op", "claim", "v_tx", "p_tx", "p_match", "new_rows", "old_rows",
           'Ünï "q"']  # fmt: skip
TABLE = 'Sch "x".T "y"'  # as parse_ident reads '"Sch ""x"""."T ""y"""'
NAME = '"Sch ""x"""."T ""y"""'


def _schema() -> sql.Composed:
    columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in HOSTILE)
    return sql.SQL(
        "create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
        " create schema {schema};"
        " create table {schema}.{table} ("
        "  {select} text collate ci, tx_id int, {columns}, primary key ({select}, tx_id));"
        " select resilience.manage_table({name})"
    ).format(
        schema=sql.Identifier('Sch "x"'),
        table=sql.Identifier('T "y"'),
        select=sql.Identifier("select"),
        columns=columns,
        name=sql.Literal(NAME),
    )


KEYS = st.sampled_from(["A", "a", "b", "Straße", "STRASSE"])
NUMS = st.integers(min_value=1, max_value=2)
VALUE = st.sampled_from(["", "x", "X", "'; drop table t; --", None])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Step], str]:
    steps: list[Step] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["insert", "upsert", "update", "rekey", "delete", "lock"]))
        key = {"select": draw(KEYS), "tx_id": draw(NUMS)}
        if kind in ("insert", "upsert"):
            column = draw(st.sampled_from(HOSTILE))
            steps.append(Step(kind, key | {column: draw(VALUE)}))
        elif kind == "update":
            column = draw(st.sampled_from(HOSTILE))
            steps.append(Step("update", {column: draw(VALUE)}, key))
        elif kind == "rekey":
            steps.append(Step("update", {"select": draw(KEYS)}, key))
        else:
            steps.append(Step(kind, match=key))
    return steps, draw(st.sampled_from(["rollback", "commit"]))


def test_keys_and_names_roll_back_like_a_real_rollback(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(_schema())
    seed = sql.SQL(
        "truncate {t}; insert into {t} ({s}, tx_id, {a}) values"
        " ('A', 1, 'one'), ('b', 1, 'two'), ('Straße', 2, 'three')"
    ).format(
        t=sql.Identifier('Sch "x"', 'T "y"'), s=sql.Identifier("select"), a=sql.Identifier("a")
    )
    order = '"select" collate "C", tx_id'
    with (
        psycopg.connect(dsn, autocommit=True) as calls,
        psycopg.connect(dsn, autocommit=True) as ender,
    ):

        @settings(derandomize=True, max_examples=50, deadline=None, database=None)
        @given(scenarios())
        def check(scenario: tuple[list[Step], str]) -> None:
            steps, ending = scenario
            conn.execute(seed)
            check_scenario(
                conn, calls, ender, NAME, steps, ending,
                lambda: rows_text(conn, TABLE, order), lambda: rows_text(calls, TABLE, order),
            )  # fmt: skip

        check()
