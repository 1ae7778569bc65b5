"""Alembic env of a tiny sample app (its own migrations, version table in public).

Runs on the connection the caller hands over in ``config.attributes["connection"]``
(Alembic's "sharing a connection" recipe; `pgresilience plan --alembic` uses
it), else on its own from ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        transaction_per_migration=bool(config.attributes.get("transaction_per_migration")),
    )
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
