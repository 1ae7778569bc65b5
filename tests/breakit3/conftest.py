"""Fixtures of the third review's attacks, shared with the client tests: the
managed table ``accounts`` (ids 1..60, balance 100 each) and a PgBouncer in
transaction mode."""

from __future__ import annotations

import shutil

from client.conftest import Bouncer, accounts, bouncer

__all__ = ["Bouncer", "accounts", "bouncer", "psql_binary"]


def psql_binary() -> str:
    """The client's psql (apt postgresql-client): it talks to every server
    version; the npm server builds of the version matrix ship none."""
    found = shutil.which("psql")
    assert found, "psql is needed (apt package postgresql-client)"
    return found
