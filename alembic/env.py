"""Alembic environment for pgresilience's own tables.

The version table is ``resilience.alembic_version``, so an application's own
``alembic_version`` is never touched. The connection comes from the installer
(``config.attributes["connection"]``) or from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

VERSION_SCHEMA = "resilience"


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # The version table lives in our schema, which must exist before Alembic
    # creates that table; after a downgrade to base the schema is removed too
    # (only our version table is left in it by then).
    connection.execute(text("create schema if not exists resilience"))
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema=VERSION_SCHEMA,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
        left = connection.execute(text("select count(*) from resilience.alembic_version")).scalar()
        if left == 0:
            connection.execute(text("drop table resilience.alembic_version"))
            connection.execute(text("drop schema resilience"))


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("pgresilience migrations run online only")
run_migrations_online()
