"""Demo step: schema version tracking. Migrations run while a watcher
(SchemaVersionManager) prints each new version, its changes and their
severities. Everything lives in a throwaway schema, dropped at the end."""

from __future__ import annotations

import queue
from collections.abc import Callable

import psycopg

from pgresilience.schema import ChangeList, SchemaVersionManager, plan
from pgresilience.schema.format import version_lines

__all__ = ["run"]

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "migration 1: create the shop (4 statements, one transaction)",
        [
            "create schema pgresilience_demo_shop",
            "create table pgresilience_demo_shop.customers ("
            " id bigint generated always as identity primary key,"
            " email text not null unique, name text)",
            "create table pgresilience_demo_shop.orders ("
            " id bigint generated always as identity primary key,"
            " customer_id bigint not null references pgresilience_demo_shop.customers (id),"
            " total integer)",
            "create index orders_customer_idx on pgresilience_demo_shop.orders (customer_id)",
        ],
    ),
    (
        "migration 2: rename, retype, tighten, secure",
        [
            "alter table pgresilience_demo_shop.customers rename column name to full_name",
            "alter table pgresilience_demo_shop.orders alter column total type bigint",
            "alter table pgresilience_demo_shop.orders"
            " add column status text not null default 'new'",
            "alter table pgresilience_demo_shop.customers alter column full_name set not null",
            "alter table pgresilience_demo_shop.customers enable row level security",
            "create policy own_row on pgresilience_demo_shop.customers for select using (true)",
        ],
    ),
    ("migration 3: drop the orders table", ["drop table pgresilience_demo_shop.orders"]),
]


def run(dsn: str, say: Callable[[str], None]) -> None:
    arrived: queue.Queue[ChangeList] = queue.Queue()
    with (
        SchemaVersionManager(dsn) as manager,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        current = manager.initialize()
        say(f"watcher started at schema version {current.version} (hash {current.hash[:12]})")
        manager.on_schema_change(arrived.put)
        manager.wait_listening()
        conn.execute(
            "drop schema if exists pgresilience_demo_shop cascade"
        )  # a previous run's leftovers
        _drain(arrived, timeout=1.0)
        steps = [
            *MIGRATIONS,
            ("clean up: drop the demo schema", ["drop schema pgresilience_demo_shop cascade"]),
        ]
        for title, statements in steps:
            if statements is MIGRATIONS[-1][1]:
                _plan_first(dsn, statements, say)
            say(f"-- {title}")
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
            versions = _drain(arrived, timeout=5.0, stop_after_first=True)
            if not versions:
                # No event triggers here (not superuser): catch up by hand.
                say("   (no event triggers: calling schema_refresh())")
                manager.force_refresh()
                versions = _drain(arrived, timeout=1.0, stop_after_first=True)
            for changes in versions:
                for line in version_lines(changes):
                    say(f"   {line}")


def _plan_first(dsn: str, statements: list[str], say: Callable[[str], None]) -> None:
    """`pgresilience plan` on the next migration: run, rate, roll back."""
    say("-- pgresilience plan (CI gate, --fail-on high): the next migration, rolled back")
    result = plan.plan_sql(dsn, ";\n".join(statements) + ";")
    for line in plan.report_lines(result, "high"):
        say(f"   {line}")
    say(f"   exit code {result.exit_code('high')}: the gate would stop this deploy for review")


def _drain(
    arrived: queue.Queue[ChangeList], *, timeout: float, stop_after_first: bool = False
) -> list[ChangeList]:
    got: list[ChangeList] = []
    try:
        got.append(arrived.get(timeout=timeout))
        while True:
            got.append(arrived.get(timeout=0.2 if stop_after_first else timeout))
    except queue.Empty:
        return got
