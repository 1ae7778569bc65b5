"""The shop's database: a fresh copy of the test template (pgresilience
installed by a superuser, with event triggers), the schema of app.py, and
PostgREST's `authenticator` connections, one per signed-in user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from .app import AUTH, SHOP, Rest


@pytest.fixture
def shop(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(AUTH)
        admin.execute(SHOP)
    return dsn


@pytest.fixture
def user(shop: str) -> Iterator[Callable[[str], Rest]]:
    """user(sub) -> a PostgREST session of that signed-in user."""
    conns: list[psycopg.Connection[Any]] = []

    def make(sub: str) -> Rest:
        conn = psycopg.connect(shop, user="authenticator", autocommit=True)
        conns.append(conn)
        return Rest(conn, sub)

    yield make
    for conn in conns:
        conn.close()


@pytest.fixture
def oracle_shop(server: Any, template_db: str) -> Iterator[str]:
    """A second shop, for the real-transaction oracle: its open transaction
    must not hold row locks the logical run would wait for."""
    import uuid

    name = f"pgr_oracle_{uuid.uuid4().hex[:12]}"
    server.create_database(name, template=template_db)
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as admin:
            admin.execute(AUTH)
            admin.execute(SHOP)
        yield server.dsn(name)
    finally:
        server.drop_database(name)
