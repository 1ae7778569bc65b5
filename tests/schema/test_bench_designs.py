"""The bench-local designs of schema tracking's commit path
(bench/ddl_designs.sql) keep what they claim to keep, so that
bench/ddl_overhead.py's figures for them compare like with like: one
version per committed migration, none for a rolled-back one, a hash that
depends on the schema only (not on OIDs, not on how the DDL was split into
migrations), and each changed object's JSON before and after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

DESIGNS_SQL = Path(__file__).resolve().parents[2] / "bench" / "ddl_designs.sql"

MIGRATIONS = [
    [
        "create table app.customer (id bigint generated always as identity primary key, "
        "email text not null unique)",
        "create type app.state as enum ('new', 'paid')",
    ],
    [
        "create table app.orders (id bigint primary key, "
        "customer_id bigint references app.customer (id), state app.state not null default 'new', "
        "total numeric(10, 2) check (total >= 0))",
        "create index orders_customer on app.orders (customer_id)",
    ],
    ["alter table app.orders rename column total to amount"],
    ["alter table app.customer alter column email type varchar(200)"],
    [
        "create view app.paid as select id, amount from app.orders where state = 'paid'",
        "create function app.order_count() returns bigint language sql "
        "as 'select count(*) from app.orders'",
    ],
    [
        "alter table app.orders enable row level security",
        "create policy own on app.orders using (customer_id = 1)",
    ],
    ["alter type app.state add value 'refunded'"],
    ["alter table app.orders drop constraint orders_total_check", "drop index app.orders_customer"],
]


@pytest.fixture
def two_databases(server: Any) -> Iterator[tuple[str, str]]:
    names = [f"pgr_design_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        server.create_database(name)
    try:
        yield server.dsn(names[0]), server.dsn(names[1])
    finally:
        for name in names:
            server.drop_database(name)


def install(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DESIGNS_SQL.read_text())  # type: ignore[arg-type]
        conn.execute("insert into design.settings (mode) values (%s)", (mode,))
        conn.execute("create schema app")


def run(dsn: str, migrations: list[list[str]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in migrations:
            with conn.transaction():
                for statement in migration:
                    conn.execute(statement)  # type: ignore[arg-type]


def last_changes(dsn: str) -> dict[str, tuple[Any, Any]]:
    """The last version's changes: object key -> (JSON before, JSON after)."""
    return {key: (before, after) for key, before, after in versions(dsn)[-1][2]}


def versions(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "select id, encode(hash, 'hex'), changes from design.versions order by id"
        ).fetchall()


@pytest.mark.parametrize("mode", ["fold at commit", "read per statement"])
def test_a_version_per_migration_and_a_hash_of_the_schema_alone(
    two_databases: tuple[str, str], mode: str
) -> None:
    stepwise, at_once = two_databases
    install(stepwise, mode)
    install(at_once, mode)
    run(stepwise, MIGRATIONS)
    # The same DDL as one migration, after unrelated objects came and went
    # (other OIDs): the same schema, the same hash.
    run(at_once, [["create table app.scratch (id int)"], ["drop table app.scratch"]])
    run(at_once, [[statement for migration in MIGRATIONS for statement in migration]])

    recorded = versions(stepwise)
    assert len(recorded) == 1 + len(MIGRATIONS)  # "create schema app" first
    assert recorded[-1][1] == versions(at_once)[-1][1]
    hashes = [row[1] for row in recorded]
    assert len(set(hashes[1:])) == len(MIGRATIONS), "every migration changes the hash"


@pytest.mark.parametrize("mode", ["fold at commit", "read per statement"])
def test_changes_carry_each_object_before_and_after(
    two_databases: tuple[str, str], mode: str
) -> None:
    dsn = two_databases[0]
    install(dsn, mode)
    run(dsn, MIGRATIONS[:3])
    changes = last_changes(dsn)
    before, after = changes["r:app.orders"]
    assert [c[0] for c in before["columns"]] == ["id", "customer_id", "state", "total"]
    assert [c[0] for c in after["columns"]] == ["id", "customer_id", "state", "amount"]
    # The constraint's text names the column: it changed too.
    assert "total" in changes["constraint:app.orders.orders_total_check"][0]["definition"]
    assert "amount" in changes["constraint:app.orders.orders_total_check"][1]["definition"]

    run(dsn, MIGRATIONS[3:])
    last = last_changes(dsn)
    assert last["constraint:app.orders.orders_total_check"][1] is None  # dropped
    assert last["index:app.orders_customer"][1] is None


@pytest.mark.parametrize("mode", ["fold at commit", "read per statement", "hooks only"])
def test_a_rolled_back_migration_records_nothing(two_databases: tuple[str, str], mode: str) -> None:
    dsn = two_databases[0]
    install(dsn, mode)
    before = versions(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("create table app.gone (id int)")
        conn.execute("savepoint s")
        conn.execute("create table app.gone_too (id int)")
        conn.rollback()
    assert versions(dsn) == before


@pytest.mark.parametrize("mode", ["fold at commit", "read per statement"])
def test_renames_and_dependent_views_change_the_version(
    two_databases: tuple[str, str], mode: str
) -> None:
    dsn = two_databases[0]
    install(dsn, mode)
    run(dsn, MIGRATIONS[:2])
    run(dsn, [["create view app.big as select id, total from app.orders where total > 100"]])
    before = versions(dsn)[-1][1]
    run(dsn, [["alter table app.orders rename constraint orders_total_check to total_positive"]])
    renamed = versions(dsn)[-1]
    assert renamed[1] != before, "a renamed constraint is another schema"

    # Renaming the column changes the view's text, though the view itself
    # was not touched by the DDL.
    run(dsn, [["alter table app.orders rename column total to amount"]])
    changes = last_changes(dsn)
    assert "v:app.big" in changes
    assert "amount" in changes["v:app.big"][1]["view"]
