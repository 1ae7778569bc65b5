"""tx_savepoint / tx_rollback_to against real SAVEPOINT / ROLLBACK TO.

The same writes and savepoint operations run once in a real database
transaction (on an unmanaged twin table) and once as a logical transaction
(a non-superuser client, one call per database transaction); the tables are
compared as sorted `row::text` after every rollback_to and at the end (a
final commit, or a final rollback). The one documented difference (a name
taken again moves the savepoint: a rollback to a savepoint taken before its
newest take removes it, where SQL keeps the older take) is expected as RZ006.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from breakit10_lifecycle.support import call, clients, connect, rows, sqlstate

NAMES = ["a", "b", "we\"ird's", "späß 🚀", "x" * 200, "x" * 199 + "y", " ", "a "]


def _setup(conn: psycopg.Connection[Any]) -> None:
    for table in ("items", "items_ref"):
        conn.execute(
            f"create table {table} (id int primary key, v int not null, note text, tag text unique)"
        )
        conn.execute(
            f"insert into {table} select g, g * 10, 'n' || g, 't' || g from generate_series(1, 6) g"
        )
    conn.execute("select resilience.manage_table('items')")
    conn.execute("grant select, insert, update, delete on items to resilience_user")


def _run_sequence(
    rng: random.Random,
    user: psycopg.Connection[Any],
    ref: psycopg.Connection[Any],
    admin: psycopg.Connection[Any],
    steps: int,
) -> None:
    tx = call(user, "select resilience.tx_begin(60000, 'oracle')")
    ref.execute("begin")
    logical: list[str] = []  # savepoint names, oldest first (a re-take moves one)
    sql_stack: list[str] = []  # SQL's stack of takes (a re-take pushes another)
    next_id = call(ref, "select max(id) + 1 from items_ref")
    for _ in range(steps):
        existing = [r[0] for r in ref.execute("select id from items_ref order by id")]
        choice = rng.random()
        if choice < 0.2:
            name = rng.choice(NAMES)
            call(user, "select resilience.tx_savepoint(%s, %s)", tx, name)
            ref.execute(sql.SQL("savepoint {}").format(sql.Identifier(f"s{NAMES.index(name)}")))
            if name in logical:
                logical.remove(name)
            logical.append(name)
            sql_stack.append(name)
        elif choice < 0.35:
            name = rng.choice(logical if logical and rng.random() < 0.8 else NAMES)
            if name not in logical:
                with sqlstate("RZ006"):
                    call(user, "select resilience.tx_rollback_to(%s, %s)", tx, name)
                continue
            call(user, "select resilience.tx_rollback_to(%s, %s)", tx, name)
            ref.execute(
                sql.SQL("rollback to savepoint {}").format(sql.Identifier(f"s{NAMES.index(name)}"))
            )
            del logical[logical.index(name) + 1 :]
            newest = len(sql_stack) - 1 - sql_stack[::-1].index(name)
            del sql_stack[newest + 1 :]
            assert rows(admin, "items") == [
                r.replace("items_ref", "items") for r in rows(ref, "items_ref")
            ], f"after rollback_to {name!r}"
        elif choice < 0.55 or not existing:
            key = next_id if rng.random() < 0.7 or not existing else rng.choice(existing)
            if key in existing:
                continue
            next_id += 1
            data = {
                "id": key,
                "v": rng.randint(0, 99),
                "note": rng.choice([None, "x", "ü"]),
                "tag": f"t{key}",
            }
            call(user, "select resilience.tx_execute(%s, 'items', 'insert', %s)", tx, Jsonb(data))
            ref.execute("insert into items_ref values (%(id)s, %(v)s, %(note)s, %(tag)s)", data)
        elif choice < 0.62:
            # A key change (the old key and the new one both claimed).
            key = rng.choice(existing)
            call(
                user,
                "select resilience.tx_execute(%s, 'items', 'update', %s, %s)",
                tx,
                Jsonb({"id": next_id}),
                Jsonb({"id": key}),
            )
            ref.execute("update items_ref set id = %s where id = %s", (next_id, key))
            next_id += 1
        elif choice < 0.7:
            key = rng.choice(existing) if rng.random() < 0.6 else next_id
            next_id += key == next_id
            data = {"id": key, "v": rng.randint(0, 99), "note": rng.choice([None, "u"])}
            call(user, "select resilience.tx_execute(%s, 'items', 'upsert', %s)", tx, Jsonb(data))
            ref.execute(
                "insert into items_ref (id, v, note) values (%(id)s, %(v)s, %(note)s)"
                " on conflict (id) do update set v = excluded.v, note = excluded.note",
                data,
            )
        elif choice < 0.85:
            key = rng.choice(existing)
            data = {"v": rng.randint(0, 99)}
            if rng.random() < 0.3:
                data["note"] = rng.choice([None, "y", "'"])
            call(
                user,
                "select resilience.tx_execute(%s, 'items', 'update', %s, %s)",
                tx,
                Jsonb(data),
                Jsonb({"id": key}),
            )
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(v))
                for c, v in data.items()
            )
            ref.execute(
                sql.SQL("update items_ref set {} where id = {}").format(
                    assignments, sql.Literal(key)
                )
            )
        else:
            key = rng.choice(existing)
            call(
                user,
                "select resilience.tx_execute(%s, 'items', 'delete', null, %s)",
                tx,
                Jsonb({"id": key}),
            )
            ref.execute("delete from items_ref where id = %s", (key,))
    if rng.random() < 0.5:
        call(user, "select resilience.tx_commit(%s)", tx)
        ref.execute("commit")
    else:
        call(user, "select resilience.tx_rollback(%s)", tx)
        ref.execute("rollback")
    assert rows(admin, "items") == [r.replace("items_ref", "items") for r in rows(ref, "items_ref")]
    assert call(admin, "select count(*) from resilience._claims()") == 0


def test_savepoints_behave_like_sql_savepoints(conn, make_role):
    """A user would see a logical rollback_to (or the final commit/rollback
    after one) leave the table different from what SAVEPOINT / ROLLBACK TO
    leaves in a real transaction."""
    dsns = clients(make_role, conn)
    _setup(conn)
    with connect(dsns["lc_alice"]) as user, connect(conn.info.dsn) as ref:
        for seed in range(8):
            _run_sequence(random.Random(seed), user, ref, conn, steps=40)
        counts = dict(
            conn.execute(
                "select event, count(*) from resilience.audit_log group by event"
            ).fetchall()
        )
        # The sequences did exercise what they compare.
        assert counts["rollback"] >= 30 and counts["savepoint"] >= 30, counts
        assert counts["commit"] >= 2, counts
