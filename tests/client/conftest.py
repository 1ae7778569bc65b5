"""Fixtures for the client tests: a managed table the managers write to."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

ACCOUNTS = """
create table accounts (id int primary key, owner text not null, balance int not null);
insert into accounts select g, 'owner ' || g, 100 from generate_series(1, 60) g;
select resilience.manage_table('accounts');
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with table accounts (ids 1..60, balance 100 each) managed."""
    conn.execute(ACCOUNTS)
    return conn
