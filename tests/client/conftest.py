"""Fixtures for the client tests: a managed table the managers write to, and
a real PgBouncer in transaction mode."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgbouncer import free_port, running_pgbouncer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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


@dataclass
class Bouncer:
    """A PgBouncer in transaction mode in front of the test server (as
    Supabase's pooler on port 6543 is)."""

    port: int

    def dsn(self, server_dsn: str) -> str:
        """``server_dsn`` (a test database) reached through the pooler instead."""
        params = conninfo_to_dict(server_dsn)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)


@pytest.fixture(scope="session")
def bouncer(server) -> Iterator[Bouncer]:
    target = conninfo_to_dict(server.admin_dsn)
    login = f"user={target.get('user', 'postgres')}"
    if target.get("password"):
        login += f" password={target['password']}"
    port = free_port()

    def write_config(workdir: Path) -> None:
        (workdir / "pgbouncer.ini").write_text(
            BOUNCER_INI.format(
                host=target.get("host", "127.0.0.1"),
                server_port=target.get("port", "5432"),
                login=login,
                port=port,
                dir=workdir,
            )
        )

    with running_pgbouncer(write_config, "127.0.0.1", port):
        yield Bouncer(port)


BOUNCER_INI = """
[databases]
* = host={host} port={server_port} {login}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 4
max_client_conn = 300
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""
