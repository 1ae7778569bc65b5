"""Demo step: schema version tracking. Migrations run while a watcher
(SchemaVersionManager) prints each new version, its changes and their
severities. Everything lives in a throwaway schema, dropped at the end."""

from __future__ import annotations

import queue
from collections.abc import Callable

import psycopg

from pgresilience.schema import ChangeList, SchemaVersionManager
from pgresilience.schema.format import version_lines

__all__ = ["run"]

SCHEMA = "pgresilience_demo_shop"

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "migration 1: create the shop (4 statements, one transaction)",
        [
            f"create schema {SCHEMA}",
            f"create table {SCHEMA}.customers (id bigint generated always as identity "
            "primary key, email text not null unique, name text)",
            f"create table {SCHEMA}.orders (id bigint generated always as identity primary key, "
            f"customer_id bigint not null references {SCHEMA}.customers (id), total integer)",
            f"create index orders_customer_idx on {SCHEMA}.orders (customer_id)",
        ],
    ),
    (
        "migration 2: rename, retype, tighten, secure",
        [
            f"alter table {SCHEMA}.customers rename column name to full_name",
            f"alter table {SCHEMA}.orders alter column total type bigint",
            f"alter table {SCHEMA}.orders add column status text not null default 'new'",
            f"alter table {SCHEMA}.customers alter column full_name set not null",
            f"alter table {SCHEMA}.customers enable row level security",
            f"create policy own_row on {SCHEMA}.customers for select using (true)",
        ],
    ),
    ("migration 3: drop the orders table", [f"drop table {SCHEMA}.orders"]),
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
        conn.execute(f"drop schema if exists {SCHEMA} cascade")  # a previous run's leftovers
        _drain(arrived, timeout=1.0)
        steps = [*MIGRATIONS, ("clean up: drop the demo schema", [f"drop schema {SCHEMA} cascade"])]
        for title, statements in steps:
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
