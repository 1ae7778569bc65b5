"""Savepoints against the real thing: the same writes run through tx_execute /
tx_savepoint / tx_rollback_to on one table, and through SQL's own SAVEPOINT /
ROLLBACK TO SAVEPOINT in one open database transaction on its twin. After
every step both tables hold the same rows (``row::text``), and after the final
tx_rollback the logical table is back to its first state, with no claim left.

Savepoint names are reused on purpose: taking a name again moves it, which is
what SQL's ROLLBACK TO does with the newest savepoint of that name as long as
nobody rolls back past the newer one (docs/transactions.md, "Rollback")."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from .conftest import call, claims_of, rows_text, sqlstate_of

TWINS = """
create table logical (id integer primary key, v integer, j jsonb, s text unique);
create table oracle (like logical including all);
insert into logical
    select g, g, jsonb_build_object('a', g), 's' || g from generate_series(1, 6) as g;
insert into oracle select * from logical;
select resilience.manage_table('logical');
"""


def _real_write(cur: psycopg.Cursor[Any], op: str, data: Any, key: int) -> str | None:
    """The write in SQL on the oracle table, inside its own savepoint (so a
    failing write leaves the open transaction usable); its SQLSTATE or None."""
    cur.execute("savepoint probe")
    try:
        if op in ("insert", "upsert"):
            tail = (
                " on conflict (id) do update set v = excluded.v, j = excluded.j, s = excluded.s"
                if op == "upsert"
                else ""
            )
            cur.execute(
                "insert into oracle select * from jsonb_populate_record(null::oracle, %s)" + tail,
                (Jsonb(data),),
            )
        elif op == "delete":
            cur.execute("delete from oracle where id = %s", (key,))
        else:
            sets = sql.SQL(", ").join(
                sql.SQL("{} = (jsonb_populate_record(null::oracle, %s)).{}").format(
                    sql.Identifier(c), sql.Identifier(c)
                )
                for c in data
            )
            cur.execute(
                sql.SQL("update oracle set {} where id = %s").format(sets),
                [Jsonb(data)] * len(data) + [key],
            )
    except psycopg.Error as error:
        cur.execute("rollback to savepoint probe")
        return error.sqlstate
    cur.execute("release savepoint probe")
    return None


@pytest.mark.parametrize("seed", range(12))
def test_savepoints_restore_exactly_what_rollback_to_savepoint_restores(
    conn: psycopg.Connection[Any], dsn: str, seed: int
) -> None:
    conn.execute(TWINS)
    first = rows_text(conn, "logical")
    rnd = random.Random(seed)
    tx = call(conn, "tx_begin")
    taken: list[str] = []  # live savepoint names, oldest first
    with psycopg.connect(dsn) as real:
        cur = real.cursor()
        for _ in range(30):
            roll = rnd.random()
            key = rnd.randint(1, 9)
            if roll < 0.15:
                name = rnd.choice(["a", "b", "c"])
                call(conn, "tx_savepoint", tx, name)
                cur.execute(sql.SQL("savepoint {}").format(sql.Identifier(name)))
                if name in taken:
                    taken.remove(name)
                taken.append(name)
            elif roll < 0.27 and taken:
                name = rnd.choice(taken)
                call(conn, "tx_rollback_to", tx, name)
                cur.execute(sql.SQL("rollback to savepoint {}").format(sql.Identifier(name)))
                del taken[taken.index(name) + 1 :]
            else:
                op = rnd.choice(["insert", "upsert", "update", "update_key", "delete"])
                v = rnd.randint(0, 99)
                data: Any = {"id": key, "v": v, "j": {"x": v}, "s": f"s{rnd.randint(1, 12)}"}
                if op == "update":
                    data = {"v": v, "j": None if v % 3 == 0 else {"y": v}}
                elif op == "update_key":
                    op, data = "update", {"id": rnd.randint(1, 9)}
                elif op == "delete":
                    data = None
                match = {"id": key} if op in ("update", "delete") else None
                expected = _real_write(cur, op, data, key)
                got = sqlstate_of(call, conn, "tx_execute", tx, "logical", op, data, match)
                assert got == expected, (op, data, match)
            oracle_rows = [
                r[0] for r in real.execute("select t::text from oracle as t order by t.id")
            ]
            assert rows_text(conn, "logical") == oracle_rows
        real.rollback()
    call(conn, "tx_rollback", tx)
    assert rows_text(conn, "logical") == first
    assert claims_of(conn, tx) == 0


def test_rollback_to_a_savepoint_removed_by_an_earlier_rollback_to_is_rz006(
    conn: psycopg.Connection[Any], items: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_savepoint", tx, "outer")
    call(conn, "tx_execute", tx, items, "update", {"v": 1}, {"id": 1})
    call(conn, "tx_savepoint", tx, "inner")
    call(conn, "tx_execute", tx, items, "update", {"v": 2}, {"id": 1})
    call(conn, "tx_rollback_to", tx, "outer")
    # SQL: ROLLBACK TO outer destroys inner (3B001 after); here RZ006.
    assert sqlstate_of(call, conn, "tx_rollback_to", tx, "inner") == "RZ006"
    # outer itself survives its rollback_to, as in SQL; rolling back to it again is a no-op.
    assert call(conn, "tx_rollback_to", tx, "outer")["restored_rows"] == 0
    assert sqlstate_of(call, conn, "tx_rollback_to", tx, "never-taken") == "RZ006"


def test_rollback_to_releases_at_once_the_claims_taken_after_the_savepoint(
    conn: psycopg.Connection[Any], items: str, make_role: Any
) -> None:
    other = psycopg.connect(make_role("b5_other", member_of=("resilience_user",)), autocommit=True)
    with other:
        tx = call(conn, "tx_begin")
        call(conn, "tx_execute", tx, items, "update", {"v": 100}, {"id": 1})
        call(conn, "tx_savepoint", tx, "s")
        call(conn, "tx_execute", tx, items, "update", {"v": 200}, {"id": 2})
        call(conn, "tx_execute", tx, items, "lock", None, {"id": 3})
        call(conn, "tx_execute", tx, items, "insert", {"id": 6, "v": 60})
        # Claimed now: 1, 2, 3, 6. Another writer is refused without waiting.
        for key in (1, 2, 3):
            assert (
                sqlstate_of(other.execute, "update items set v = 0 where id = %s", (key,))
                == "55P03"
            )
        call(conn, "tx_rollback_to", tx, "s")
        assert claims_of(conn, tx) == 1
        # What came after the savepoint is free again; what came before is not.
        assert other.execute("update items set v = v + 1 where id in (2, 3)").rowcount == 2
        assert other.execute("insert into items values (6, 66, null)").rowcount == 1
        assert sqlstate_of(other.execute, "update items set v = 0 where id = 1") == "55P03"
        call(conn, "tx_rollback", tx)
        assert rows_text(conn, items) == [
            "(1,10,n1)", "(2,21,n2)", "(3,31,n3)", "(4,40,n4)", "(5,50,n5)", "(6,66,)",
        ]  # fmt: skip


def test_rollback_to_over_a_drifted_row_is_rz005_and_changes_nothing(
    conn: psycopg.Connection[Any], items: str
) -> None:
    tx = call(conn, "tx_begin")
    call(conn, "tx_savepoint", tx, "s")
    call(conn, "tx_execute", tx, items, "update", {"v": 111}, {"id": 1})
    call(conn, "tx_execute", tx, items, "update", {"v": 222}, {"id": 2})
    # A write that bypasses every trigger (replica mode, superuser only).
    conn.execute("set session_replication_role = replica")
    conn.execute("update items set v = 999 where id = 2")
    conn.execute("reset session_replication_role")
    before = rows_text(conn, items)
    with pytest.raises(psycopg.Error) as caught:
        call(conn, "tx_rollback_to", tx, "s")
    assert caught.value.sqlstate == "RZ005"
    assert rows_text(conn, items) == before  # row 1 was not restored alone
    status = call(conn, "tx_status", tx)
    assert (status["status"], status["operations"], status["savepoints"]) == ("active", 2, ["s"])


CASCADE_TWINS = """
create table lp (id integer primary key, v integer);
create table lc (
    id integer primary key,
    pid integer references lp on delete cascade on update cascade,
    w integer
);
create table rp (like lp including all);
create table rc (
    like lc including all,
    foreign key (pid) references rp on delete cascade on update cascade
);
insert into lp select g, g from generate_series(1, 4) as g;
insert into rp select * from lp;
insert into lc select g, 1 + g % 4, g from generate_series(1, 6) as g;
insert into rc select * from lc;
select resilience.manage_table('lp');
select resilience.manage_table('lc');
"""


def _both(conn: psycopg.Connection[Any], parent: str, child: str) -> list[list[str]]:
    return [rows_text(conn, parent), rows_text(conn, child)]


@pytest.mark.parametrize("seed", range(8))
def test_savepoints_over_foreign_key_cascades_match_rollback_to_savepoint(
    conn: psycopg.Connection[Any], dsn: str, seed: int
) -> None:
    conn.execute(CASCADE_TWINS)
    first = _both(conn, "lp", "lc")
    rnd = random.Random(seed)
    tx = call(conn, "tx_begin")
    taken: list[str] = []
    with psycopg.connect(dsn) as real:
        cur = real.cursor()
        for _ in range(25):
            roll = rnd.random()
            if roll < 0.15:
                name = rnd.choice(["a", "b"])
                call(conn, "tx_savepoint", tx, name)
                cur.execute(sql.SQL("savepoint {}").format(sql.Identifier(name)))
                if name in taken:
                    taken.remove(name)
                taken.append(name)
                continue
            if roll < 0.27 and taken:
                name = rnd.choice(taken)
                call(conn, "tx_rollback_to", tx, name)
                cur.execute(sql.SQL("rollback to savepoint {}").format(sql.Identifier(name)))
                del taken[taken.index(name) + 1 :]
            else:
                side = rnd.choice(["p", "c"])
                op = rnd.choice(["insert", "update", "update_key", "delete"])
                key = rnd.randint(1, 8)
                data: dict[str, Any] | None = {
                    ("p", "insert"): {"id": key, "v": rnd.randint(0, 9)},
                    ("p", "update"): {"v": rnd.randint(0, 9)},
                    ("c", "insert"): {"id": key, "pid": rnd.randint(1, 6), "w": rnd.randint(0, 9)},
                    ("c", "update"): {"pid": rnd.randint(1, 6)},
                }.get((side, op), {"id": rnd.randint(1, 8)} if op == "update_key" else None)
                op = "update" if op == "update_key" else op
                match = {"id": key} if op in ("update", "delete") else None
                cur.execute("savepoint probe")
                try:
                    table = sql.Identifier("r" + side)
                    if op == "insert":
                        cur.execute(
                            sql.SQL(
                                "insert into {} select * from jsonb_populate_record(null::{}, %s)"
                            ).format(table, table),
                            (Jsonb(data),),
                        )
                    elif op == "delete":
                        cur.execute(sql.SQL("delete from {} where id = %s").format(table), (key,))
                    else:
                        assert data is not None
                        [(column, value)] = data.items()
                        cur.execute(
                            sql.SQL("update {} set {} = %s where id = %s").format(
                                table, sql.Identifier(column)
                            ),
                            (value, key),
                        )
                    cur.execute("release savepoint probe")
                    expected = None
                except psycopg.Error as error:
                    cur.execute("rollback to savepoint probe")
                    expected = error.sqlstate
                got = sqlstate_of(call, conn, "tx_execute", tx, "l" + side, op, data, match)
                assert got == expected, (side, op, data, match)
            oracle = [
                [r[0] for r in real.execute("select t::text from rp as t order by t.id")],
                [r[0] for r in real.execute("select t::text from rc as t order by t.id")],
            ]
            assert _both(conn, "lp", "lc") == oracle
        real.rollback()
    call(conn, "tx_rollback", tx)
    assert _both(conn, "lp", "lc") == first
    assert claims_of(conn, tx) == 0
