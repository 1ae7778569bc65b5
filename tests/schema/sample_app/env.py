"""Alembic env of a tiny sample app (its own migrations, version table in public)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        transaction_per_migration=bool(config.attributes.get("transaction_per_migration")),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
