"""A sample app's own Alembic migrations, run against the test database: an
`alembic upgrade` is one database transaction, so it is one schema version;
with transaction_per_migration each revision is its own version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.conninfo import conninfo_to_dict

from pgresilience.schema import ChangeList

SAMPLE_APP = Path(__file__).parent / "sample_app"


def alembic_config(dsn: str, **attributes: Any) -> Config:
    params = conninfo_to_dict(dsn)
    url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host')}:"
        f"{params.get('port')}/{params.get('dbname')}"
    )
    config = Config()
    config.set_main_option("script_location", str(SAMPLE_APP))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes.update(attributes)
    return config


def versions_since(conn: psycopg.Connection[Any], version: int) -> list[ChangeList]:
    rows = conn.execute("select resilience.schema_changes_since(%s)", (version,)).fetchall()
    return [ChangeList.from_row(r[0]) for r in rows]


def latest(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select max(version) from resilience.schema_versions").fetchone()
    assert row is not None
    return int(row[0])


def test_alembic_upgrade_is_one_version_listing_every_change(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    before = latest(conn)
    command.upgrade(alembic_config(dsn), "head")
    [version] = versions_since(conn, before)
    facts = {(c["type"], c["table"], c["column"], c["severity"]) for c in version}
    # Tables created in this very version are reported once, with their columns.
    assert facts == {
        ("table_added", "public.alembic_version", None, "low"),
        ("table_added", "public.users", None, "low"),
        ("table_added", "public.orders", None, "low"),
    }
    assert set(version.tables) == {"public.alembic_version", "public.users", "public.orders"}
    users = next(c for c in version if c["table"] == "public.users")
    assert [col["name"] for col in users["new_value"]["columns"]] == ["id", "email", "full_name"]


def test_alembic_transaction_per_migration_gives_one_version_each(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    before = latest(conn)
    command.upgrade(alembic_config(dsn, transaction_per_migration=True), "head")
    versions = versions_since(conn, before)
    assert len(versions) == 3
    second, third = versions[1], versions[2]
    assert {(c["type"], c["table"], c["column"]) for c in second} >= {
        ("table_added", "public.orders", None),
        ("column_renamed", "public.users", "full_name"),
    }
    assert {(c["type"], c["column"], c["severity"]) for c in third} == {
        ("column_added", "status", "low"),
        ("column_type_changed", "total", "low"),  # numeric(10,2) -> (12,2): no rewrite
    }
    # Downgrade back to a1: orders dropped (critical), the rename undone.
    before = latest(conn)
    command.downgrade(alembic_config(dsn), "a1")
    [down] = versions_since(conn, before)
    assert ("table_dropped", "public.orders", "critical") in {
        (c["type"], c["table"], c["severity"]) for c in down
    }
    assert ("column_renamed", "name") in {(c["type"], c["column"]) for c in down}
