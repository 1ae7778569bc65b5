"""Oracle: with no other session writing, tx_rollback must leave every table
exactly as a real ROLLBACK would, i.e. as it was before tx_begin, whatever
sequence of inserts, key updates, deletes and upserts ran across parent and
child managed tables with every foreign-key action (CASCADE, SET NULL, SET
DEFAULT, RESTRICT, NO ACTION, DEFERRABLE INITIALLY DEFERRED, multi-column
MATCH FULL, a UNIQUE non-key column referenced, a self-reference, a cycle).
A false refusal (RZ005 with nobody else writing) is a break too; so is a
savepoint rollback (`tx_rollback_to`) that does not give back the state at
the savepoint. Sequences come from hypothesis, seeded and bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.conftest import Server

SCHEMA = """
create table p (
    id integer primary key,
    u integer unique,
    note text,
    unique (u, id)
);
create table c (
    id integer primary key,
    pid integer references p (id) on delete cascade on update cascade,
    pu integer references p (u) on delete set null on update set null,
    sup integer references c (id) on delete cascade on update cascade,
    note text
);
create table g (
    id integer primary key,
    a integer default 10,
    b integer default 1,
    foreign key (a, b) references p (u, id) match full on delete set default on update cascade
);
create table d (
    id integer primary key,
    pid integer references p (id) on delete restrict,
    cid integer references c (id) deferrable initially deferred
);
-- a cycle: p.owner -> c, c.pid -> p
alter table p add column owner integer references c (id) on delete set null on update cascade;
"""

SEED = """
insert into p (id, u, note) values (1, 10, 'one'), (2, 20, 'two');
insert into c values (1, 1, 10, null, 'c1'), (2, 2, 20, 1, 'c2');
update p set owner = 2 where id = 1;
insert into g values (1, 10, 1), (2, 20, 2);
insert into d values (1, null, 2);
"""

# Partitioned parent and child (a partition with its own column order,
# keys moving across partitions), a self-reference on the partitioned child.
PARTITIONED_SCHEMA = """
create table p (id integer, u integer, note text, primary key (id), unique (u, id))
    partition by range (id);
create table p_lo partition of p for values from (minvalue) to (3);
create table p_hi (note text, gone integer, u integer, id integer not null);
alter table p_hi drop column gone;
alter table p attach partition p_hi for values from (3) to (maxvalue);
create table c (
    id integer,
    pid integer references p (id) on delete cascade on update cascade,
    sup integer,
    note text,
    primary key (id)
) partition by list (id);
create table c_a partition of c for values in (1, 2);
create table c_b partition of c for values in (3, 4);
alter table c add foreign key (sup) references c (id) on delete set null on update cascade;
create table g (
    id integer primary key,
    a integer,
    b integer,
    foreign key (a, b) references p (u, id) match full on delete cascade on update set null
);
"""

PARTITIONED_SEED = """
insert into p values (1, 10, 'one'), (3, 30, 'three');
insert into c values (1, 1, null, 'c1'), (3, 3, 1, 'c3');
insert into g values (1, 10, 1), (2, 30, 3);
"""

PARTITIONED_COLUMNS = {
    "p": {"id": (1, 4), "u": (10, 40), "note": None},
    "c": {"id": (1, 4), "pid": (1, 4), "sup": (1, 4), "note": None},
    "g": {"id": (1, 3), "a": (10, 40), "b": (1, 4)},
}

COLUMNS = {
    "p": {"id": (1, 4), "u": (10, 40), "note": None, "owner": (1, 4)},
    "c": {"id": (1, 4), "pid": (1, 4), "pu": (10, 40), "sup": (1, 4), "note": None},
    "g": {"id": (1, 3), "a": (10, 40), "b": (1, 4)},
    "d": {"id": (1, 3), "pid": (1, 4), "cid": (1, 4)},
}


def value(column: str, bounds: tuple[int, int] | None) -> st.SearchStrategy[Any]:
    if bounds is None:
        return st.sampled_from(["x", "y", None])
    low, high = bounds
    values = st.integers(low, high)
    if bounds[0] == 10:
        values = values.map(lambda v: v // 10 * 10)
    return values if column == "id" else st.one_of(st.none(), values)


@st.composite
def operation(
    draw: st.DrawFn, tables: dict[str, dict[str, Any]]
) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
    table = draw(st.sampled_from(sorted(tables)))
    columns = tables[table]
    kind = draw(st.sampled_from(["insert", "update", "update", "delete", "upsert"]))
    if kind in ("insert", "upsert"):
        row = {name: draw(value(name, bounds)) for name, bounds in columns.items()}
        return kind, table, row, None
    match = {"id": draw(value("id", columns["id"]))}
    if kind == "delete":
        return kind, table, None, match
    names = draw(st.lists(st.sampled_from(sorted(columns)), min_size=1, max_size=2, unique=True))
    return kind, table, {n: draw(value(n, columns[n])) for n in names}, match


def oracle_database(server: Server, template_db: str, name: str, schema: str) -> Iterator[str]:
    """One database per schema for the module: the examples share it, reset between them."""
    server.drop_database(name)
    server.create_database(name, template=template_db)
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        conn.execute(schema)
        for (table,) in conn.execute(
            "select c.relname from pg_class as c where c.relnamespace = 'public'::regnamespace"
            " and c.relkind in ('r', 'p') and not c.relispartition"
        ).fetchall():
            conn.execute("select resilience.manage_table(%s::regclass)", (table,))
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture(scope="module")
def oracle_dsn(server: Server, template_db: str) -> Iterator[str]:
    yield from oracle_database(server, template_db, "pgr_breakit7_oracle", SCHEMA)


@pytest.fixture(scope="module")
def partitioned_dsn(server: Server, template_db: str) -> Iterator[str]:
    yield from oracle_database(server, template_db, "pgr_breakit7_oracle_part", PARTITIONED_SCHEMA)


def snapshot(conn: psycopg.Connection[Any], tables: Any) -> dict[str, list[str]]:
    return {
        table: [
            r[0]
            for r in conn.execute(
                sql.SQL("select t::text from {} as t order by t.id").format(sql.Identifier(table))
            )
        ]
        for table in tables
    }


def reset(conn: psycopg.Connection[Any], tables: Any, seed: str) -> None:
    # (a failed example leaves its transaction active: its claims go)
    for (tx,) in conn.execute(
        "select id from resilience.transactions where status = 'active'"
    ).fetchall():
        conn.execute(
            "update resilience.transactions set status = 'failed', finished_at = now()"
            " where id = %s",
            (tx,),
        )
        conn.execute("select resilience._release_claims(%s)", (tx,))
    conn.execute("set session_replication_role = replica")  # no FK actions while clearing
    for table in tables:
        conn.execute(sql.SQL("delete from {}").format(sql.Identifier(table)))
    conn.execute(seed)
    conn.execute("set session_replication_role = default")


def run(conn: psycopg.Connection[Any], tx: Any, ops: list[Any]) -> None:
    """Each operation in its own database transaction, as RPC calls are; one
    that PostgreSQL refuses (a key taken, an FK check) changes nothing."""
    for kind, table, data, match in ops:
        try:
            conn.execute(
                "select resilience.tx_execute(%s, %s, %s, %s::jsonb, %s::jsonb)",
                (
                    tx,
                    table,
                    kind,
                    None if data is None else json.dumps(data),
                    None if match is None else json.dumps(match),
                ),
            )
        except psycopg.IntegrityError:
            pass


def rolls_back_as_a_real_rollback(
    dsn: str, tables: dict[str, Any], seed: str, before: list[Any], after: list[Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn, tables, seed)
        initial = snapshot(conn, tables)
        tx = conn.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        run(conn, tx, before)
        at_savepoint = snapshot(conn, tables)
        conn.execute("select resilience.tx_savepoint(%s, 'sp')", (tx,))
        run(conn, tx, after)
        conn.execute("select resilience.tx_rollback_to(%s, 'sp')", (tx,))
        assert snapshot(conn, tables) == at_savepoint
        run(conn, tx, after)
        result = conn.execute("select resilience.tx_rollback(%s)", (tx,)).fetchone()[0]  # type: ignore[index]
        assert result["success"] is True
        assert snapshot(conn, tables) == initial


EXAMPLES = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@EXAMPLES
@given(
    before=st.lists(operation(COLUMNS), min_size=1, max_size=6),
    after=st.lists(operation(COLUMNS), min_size=0, max_size=6),
)
def test_rollback_equals_real_rollback_across_every_fk_action(
    oracle_dsn: str, before: list[Any], after: list[Any]
) -> None:
    rolls_back_as_a_real_rollback(oracle_dsn, COLUMNS, SEED, before, after)


@EXAMPLES
@given(
    before=st.lists(operation(PARTITIONED_COLUMNS), min_size=1, max_size=6),
    after=st.lists(operation(PARTITIONED_COLUMNS), min_size=0, max_size=6),
)
def test_rollback_equals_real_rollback_across_partitioned_parent_and_child(
    partitioned_dsn: str, before: list[Any], after: list[Any]
) -> None:
    rolls_back_as_a_real_rollback(
        partitioned_dsn, PARTITIONED_COLUMNS, PARTITIONED_SEED, before, after
    )
