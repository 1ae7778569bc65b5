"""Logical rollback against the real-ROLLBACK oracle, on a hostile schema
(world.py): random writes through tx_execute, tx_run and plain header-mode
SQL, savepoints and rollbacks to them in between; every rollback must leave
each managed row exactly (`row::text` and its binary image, in its
partition) as a real ROLLBACK (TO SAVEPOINT) would."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from breakit9_oracle import oracle
from pgresilience import installer

# The suite runs 30 fixed examples; ORACLE_EXAMPLES=500 hunts with random ones.
HUNT = int(os.environ.get("ORACLE_EXAMPLES", "0"))
KINDS = ["write", "write", "write", "write", "bulk", "savepoint", "rollback_to"]
MODES = ["execute", "run", "plain"]
OPERATIONS = ["insert", "update", "update", "delete", "upsert", "lock"]
SAVEPOINTS = ["s1", "S 1", 'ü"x']

STEPS = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31)), min_size=1, max_size=12)


@pytest.fixture(params=["superuser", "owner"])
def wconn(
    request: pytest.FixtureRequest,
    server: Server,
    template_db: str,
    conn: psycopg.Connection[Any],
    make_role: Callable[..., str],
) -> Iterator[psycopg.Connection[Any]]:
    """The connection that owns the world: the superuser of an installed
    database, or a non-superuser that owns its database, installed the
    package and owns the tables (no event triggers: DDL after manage_table
    needs manage_table again)."""
    if request.param == "superuser":
        yield conn
        return
    make_role("breakit9_owner")
    name = f"pgr_breakit9_{uuid.uuid4().hex[:10]}"
    server.create_database(name, owner="breakit9_owner")
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as admin:
            admin.execute("alter schema public owner to breakit9_owner")
        installer.install(server.dsn(name, user="breakit9_owner"))
        with psycopg.connect(server.dsn(name, user="breakit9_owner"), autocommit=True) as owner:
            yield owner
    finally:
        server.drop_database(name)


@pytest.fixture
def world(wconn: psycopg.Connection[Any]) -> dict[str, oracle.Table]:
    conn = wconn
    tables = oracle.build_world(conn)
    seeder = oracle.Writer(conn, tables, tx="", rnd=random.Random(9))
    for table in tables.values():
        for _ in range(6):
            planned = seeder.plan(table, "upsert")
            assert planned is not None
            data, _ = planned
            try:
                with conn.transaction():
                    conn.execute(seeder.plain(table, "upsert", data, {}))
            except psycopg.errors.IntegrityError:
                pass  # a deferred unique or foreign key: the seed goes on
    return tables


def one_step(
    conn: psycopg.Connection[Any],
    tables: dict[str, oracle.Table],
    tx: str,
    kind: str,
    seed: int,
    savepoints: list[tuple[str, oracle.Snapshot]],
    log: list[str],
) -> None:
    rnd = random.Random(seed)
    writer = oracle.Writer(conn, tables, tx, rnd)
    table = tables[rnd.choice(sorted(tables))]
    if kind == "savepoint":
        name = rnd.choice(SAVEPOINTS)
        conn.execute("select resilience.tx_savepoint(%s, %s)", (tx, name))
        savepoints[:] = [s for s in savepoints if s[0] != name]
        savepoints.append((name, oracle.snapshot(conn, tables)))
        log.append(f"savepoint {name}")
        return
    if kind == "rollback_to":
        if not savepoints:
            return
        index = rnd.randrange(len(savepoints))
        name, expected = savepoints[index]
        log.append(f"rollback_to {name}")
        conn.execute("select resilience.tx_rollback_to(%s, %s)", (tx, name))
        del savepoints[index + 1 :]
        lines = oracle.diff(expected, oracle.snapshot(conn, tables))
        assert not lines, "\n".join(log + lines)
        return
    try:
        with conn.transaction():
            if kind == "bulk":
                log.append(writer.bulk(table))
            else:
                mode = rnd.choice(MODES)
                batch = rnd.randint(1, 3) if mode != "execute" else 1
                log.append(writer.run(mode, table, rnd.choice(OPERATIONS), batch))
    except psycopg.errors.IntegrityError as e:
        # A write PostgreSQL itself refuses: nothing of it is kept.
        log.append(f"  refused: {e.sqlstate} {str(e).splitlines()[0][:100]}")


@settings(
    max_examples=HUNT or 30,
    deadline=None,
    derandomize=not HUNT,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_rollback_leaves_every_row_as_a_real_rollback_would(
    wconn: psycopg.Connection[Any], world: dict[str, oracle.Table], steps: list[tuple[str, int]]
) -> None:
    conn = wconn
    before = oracle.snapshot(conn, world)
    tx = str(conn.execute("select resilience.tx_begin(120000)").fetchone()[0])  # type: ignore[index]
    savepoints: list[tuple[str, oracle.Snapshot]] = []
    log: list[str] = [f"tx {tx}"]
    try:
        for index, (kind, seed) in enumerate(steps):
            one_step(conn, world, tx, kind, seed * 31 + index, savepoints, log)
        result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
        assert result["success"] is True, result
        lines = oracle.diff(before, oracle.snapshot(conn, world))
        assert not lines, "\n".join(log + lines)
        oracle.assert_unclaimed(conn, world)
    except BaseException as e:
        e.add_note("\n".join(log))
        # Leave no claims behind for the next example (or hypothesis' replay).
        try:
            conn.execute("select resilience.tx_rollback(%s, 'cleanup', true)", (tx,))
        except psycopg.Error as cleanup:
            e.add_note(f"cleanup failed too: {cleanup}")
        raise


@pytest.mark.parametrize("wconn", ["superuser"], indirect=True)
def test_every_value_of_every_column_type_round_trips_through_every_write_path(
    wconn: psycopg.Connection[Any], world: dict[str, oracle.Table]
) -> None:
    """Each hostile value of each column, written through tx_execute, tx_run
    and plain header-mode SQL in turn (updates, an insert and a delete of a
    whole row), then rolled back to a savepoint and to the start."""
    conn = wconn
    zoo = world["zoo"]
    conn.execute("insert into zoo (id) values (1) on conflict do nothing")
    before = oracle.snapshot(conn, world)
    tx = str(conn.execute("select resilience.tx_begin(120000)").fetchone()[0])  # type: ignore[index]
    writer = oracle.Writer(conn, world, tx, random.Random(1))
    turn = 0
    for column in zoo.columns:
        if not column.writable or column.name == "id":
            continue
        for value in oracle.pool(zoo, column.name):
            for data, match, operation in (
                ({column.name: value}, {"id": "1"}, "update"),
                ({"id": "77", column.name: value}, {}, "insert"),
                ({}, {"id": "77"}, "delete"),
            ):
                mode = MODES[turn % len(MODES)]
                turn += 1
                with conn.transaction():
                    writer.write(mode, zoo, operation, data, match)
        if column.name == "jb":
            conn.execute("select resilience.tx_savepoint(%s, 'half')", (tx,))
            half = oracle.snapshot(conn, world)
    conn.execute("select resilience.tx_rollback_to(%s, 'half')", (tx,))
    assert not oracle.diff(half, oracle.snapshot(conn, world))
    result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
    assert result["success"] is True
    assert not oracle.diff(before, oracle.snapshot(conn, world))
