"""Logical transactions of several threads at once, each on its own rows of
the same tables (partitioned, cascading, deferred): the ones that commit
keep exactly their rows, the ones that roll back leave theirs exactly as
before, and nobody's rollback touches a row of another (the oracle: each
thread's key range, compared as `row::text` with its partition)."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import psycopg

SCHEMA = """
create table acc (id int primary key, bal numeric, tags text[]);
create table mv (id int, region text, v float8, primary key (id, region))
    partition by list (region);
create table mv_a partition of mv for values in ('a');
create table mv_b partition of mv for values in ('b');
create table par (id int primary key, u int unique deferrable initially deferred);
create table kid (id int primary key, pid int references par on delete cascade on update cascade,
                  note jsonb);
select resilience.manage_table(t) from unnest(array['acc', 'mv', 'par', 'kid']::regclass[]) t;
"""
THREADS = 4
SPAN = 1000  # thread n owns keys n * SPAN .. n * SPAN + SPAN - 1


def rows(conn: psycopg.Connection[Any], owner: int) -> list[str]:
    low, high = owner * SPAN, owner * SPAN + SPAN - 1
    return [
        r[0]
        for r in conn.execute(
            "select 'acc ' || a::text from acc a where id between %(l)s and %(h)s"
            " union all select mv.tableoid::regclass::text || mv::text from mv"
            " where id between %(l)s and %(h)s"
            " union all select 'par ' || p::text from par p where id between %(l)s and %(h)s"
            " union all select 'kid ' || k::text from kid k where id between %(l)s and %(h)s"
            " order by 1",
            {"l": low, "h": high},
        )
    ]


def seed(conn: psycopg.Connection[Any]) -> None:
    for owner in range(THREADS):
        base = owner * SPAN
        for i in range(5):
            key = base + i
            conn.execute("insert into acc values (%s, %s, %s)", (key, f"{i}.00", ["x", None]))
            conn.execute("insert into mv values (%s, 'a', %s)", (key, -0.0 if i else float("nan")))
            conn.execute("insert into par values (%s, %s)", (key, key))
            conn.execute("insert into kid values (%s, %s, %s)", (key, key, json.dumps({"i": i})))


def work(dsn: str, owner: int, commit: bool, results: dict[int, Any]) -> None:
    rnd = random.Random(owner)
    base = owner * SPAN
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = str(conn.execute("select resilience.tx_begin(120000)").fetchone()[0])  # type: ignore[index]

        def call(table: str, op: str, data: Any, match: Any) -> None:
            conn.execute(
                "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
                (tx, table, op, *(None if v is None else json.dumps(v) for v in (data, match))),
            )

        for step in range(25):
            i = base + rnd.randrange(8)
            choice = rnd.randrange(6)
            try:
                if choice == 0:
                    call("acc", "upsert", {"id": i, "bal": str(rnd.random()), "tags": "{a}"}, None)
                elif choice == 1:
                    call("mv", "update", {"region": rnd.choice("ab"), "v": "-Infinity"}, {"id": i})
                elif choice == 2:
                    call("par", "update", {"id": i + 500}, {"id": i})
                elif choice == 3:
                    call("kid", "delete", None, {"id": i})
                elif choice == 4:
                    with conn.transaction():
                        conn.execute(
                            "select set_config('request.headers', %s, true)",
                            (json.dumps({"x-resilience-tx": tx}),),
                        )
                        conn.execute(
                            "update par set u = u + 1 where id between %s and %s",
                            (base, base + 600),
                        )
                        conn.execute(
                            "insert into kid values (%s, %s, '{}')", (base + 700 + step, i)
                        )
                else:
                    call("par", "delete", None, {"id": i})
            except psycopg.errors.IntegrityError:
                pass  # PostgreSQL's own refusal: nothing of it is kept
        results[owner] = rows(conn, owner)
        if commit:
            conn.execute("select resilience.tx_commit(%s)", (tx,))
        else:
            result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
            assert result["success"] is True


def test_concurrent_transactions_commit_and_roll_back_exactly_their_own_rows(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(SCHEMA)
    seed(conn)
    before = {owner: rows(conn, owner) for owner in range(THREADS)}
    written: dict[int, Any] = {}
    errors: list[BaseException] = []

    def run(owner: int) -> None:
        try:
            work(dsn, owner, commit=owner % 2 == 0, results=written)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert any(written[owner] != before[owner] for owner in range(THREADS))
    for owner in range(THREADS):
        expected = written[owner] if owner % 2 == 0 else before[owner]
        assert rows(conn, owner) == expected, owner
