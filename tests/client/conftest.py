"""Fixtures for the client tests: a managed table the managers write to, and
a real PgBouncer in transaction mode."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def bouncer(server) -> Iterator[Bouncer]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        pytest.fail("pgbouncer is not installed: `make setup` installs it (apt package pgbouncer)")
    target = conninfo_to_dict(server.admin_dsn)
    login = f"user={target.get('user', 'postgres')}"
    if target.get("password"):
        login += f" password={target['password']}"
    workdir = Path(tempfile.mkdtemp(prefix="pgr-bouncer-"))
    port = _free_port()
    (workdir / "pgbouncer.ini").write_text(
        BOUNCER_INI.format(
            host=target.get("host", "127.0.0.1"),
            server_port=target.get("port", "5432"),
            login=login,
            port=port,
            dir=workdir,
        )
    )
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root, like PostgreSQL
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        command = [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            *command,
        ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    assert process.stderr is not None
                    stderr = process.stderr.read()
                    raise RuntimeError(f"pgbouncer did not start: {stderr!r}") from exc
                time.sleep(0.1)
        yield Bouncer(port)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


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
