"""Oracle over foreign-key actions between managed tables.

DESIGN.md: "FK cascades captured during the transaction must roll back
correctly". A parent ``p`` with children on ``ON DELETE/UPDATE CASCADE``
(``ch``) and ``SET NULL`` (``ch2``), and a grandchild cascading from ``ch``
(``gc``): random key changes, deletes, inserts and upserts on all four, with
savepoints, then a logical rollback must leave every row as a real ROLLBACK
does; a commit keeps what a real COMMIT would."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import begin, call, execute, rows_text
from .oracle import Step, check_scenario

SCHEMA = """
create table p (id int primary key, v int);
create table ch (
    id int primary key,
    p int references p on delete cascade on update cascade,
    v int
);
create table ch2 (id int primary key, p int references p on delete set null on update set null);
create table gc (id int primary key, c int references ch on delete cascade on update cascade);
select resilience.manage_table('p');
select resilience.manage_table('ch');
select resilience.manage_table('ch2');
select resilience.manage_table('gc');
"""
SEED = """
insert into p values (1, 0), (2, 0), (3, 0);
insert into ch values (10, 1, 0), (11, 1, 0), (12, 2, 0);
insert into ch2 values (20, 1), (21, 2), (22, null);
insert into gc values (30, 10), (31, 12);
"""
TABLES = ("p", "ch", "ch2", "gc")


def snapshot_of(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    return {t: rows_text(conn, t, "id") for t in TABLES}


PARENTS = st.integers(min_value=1, max_value=5)
CHILDREN = st.integers(min_value=10, max_value=14)


@st.composite
def steps_on_tree(draw: st.DrawFn) -> tuple[list[Step], str]:
    steps: list[Step] = []
    alive: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(
            st.sampled_from(
                ["p_rekey", "p_delete", "p_insert", "ch_rekey", "ch_delete", "ch_move",
                 "ch_insert", "ch2_upsert", "gc_insert", "save", "back"]
            )
        )  # fmt: skip
        if kind == "p_rekey":
            steps.append(Step("update", {"id": draw(PARENTS)}, {"id": draw(PARENTS)}, table="p"))
        elif kind == "p_delete":
            steps.append(Step("delete", match={"id": draw(PARENTS)}, table="p"))
        elif kind == "p_insert":
            steps.append(Step("insert", {"id": draw(PARENTS), "v": 1}, table="p"))
        elif kind == "ch_rekey":
            steps.append(Step("update", {"id": draw(CHILDREN)}, {"id": draw(CHILDREN)}, table="ch"))
        elif kind == "ch_delete":
            steps.append(Step("delete", match={"id": draw(CHILDREN)}, table="ch"))
        elif kind == "ch_move":
            steps.append(Step("update", {"p": draw(PARENTS)}, {"id": draw(CHILDREN)}, table="ch"))
        elif kind == "ch_insert":
            data = {"id": draw(CHILDREN), "p": draw(PARENTS), "v": 2}
            steps.append(Step("insert", data, table="ch"))
        elif kind == "ch2_upsert":
            data = {"id": draw(st.integers(20, 23)), "p": draw(PARENTS)}
            steps.append(Step("upsert", data, table="ch2"))
        elif kind == "gc_insert":
            data = {"id": draw(st.integers(30, 33)), "c": draw(CHILDREN)}
            steps.append(Step("insert", data, table="gc"))
        elif kind == "save":
            name = draw(st.sampled_from(["a", "b"]))
            if name in alive:
                alive.remove(name)
            alive.append(name)
            steps.append(Step("savepoint", name=name))
        elif alive:
            name = draw(st.sampled_from(alive))
            del alive[alive.index(name) + 1 :]
            steps.append(Step("rollback_to", name=name))
    return steps, draw(st.sampled_from(["rollback", "rollback", "commit"]))


def test_rollback_of_cascades_equals_real_rollback(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute(SCHEMA)
    with (
        psycopg.connect(dsn, autocommit=True) as calls,
        psycopg.connect(dsn, autocommit=True) as ender,
    ):

        @settings(derandomize=True, max_examples=60, deadline=None, database=None)
        @given(steps_on_tree())
        def check(scenario: tuple[list[Step], str]) -> None:
            steps, ending = scenario
            conn.execute("truncate p, ch, ch2, gc")
            conn.execute(SEED)
            check_scenario(
                conn, calls, ender, "p", steps, ending,
                lambda: snapshot_of(conn), lambda: snapshot_of(calls),
            )  # fmt: skip

        check()


def test_key_change_then_delete_of_a_cascading_parent_rolls_back(
    conn: psycopg.Connection[Any],
) -> None:
    """The smallest case the oracle found: the parent's key changes (ON UPDATE
    CASCADE moves the child along, SET NULL empties the other child), then the
    parent is deleted (ON DELETE CASCADE deletes the child). The rollback used
    to stop with RZ005 on the cascaded child (a spurious conflict): undoing
    the delete re-inserts the child only once its parent is back."""
    conn.execute(SCHEMA)
    conn.execute(SEED)
    before = snapshot_of(conn)
    tx = begin(conn)
    execute(conn, tx, "p", "update", {"id": 5}, {"id": 1})
    execute(conn, tx, "p", "delete", None, {"id": 5})
    result = call(conn, "tx_rollback", tx)
    assert result["success"] is True and result["conflicts"] == []
    assert snapshot_of(conn) == before
