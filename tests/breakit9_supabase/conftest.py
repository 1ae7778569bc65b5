"""A Supabase project on the embedded server (see supa.py): a fresh database
owned by a non-superuser `postgres`-like role that installed pgresilience the
way a migration does (no PL/Python, no event triggers)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgresilience import installer

from .supa import APP, AUTH, OWNER


@pytest.fixture(scope="session")
def owner_role(server) -> str:  # type: ignore[no-untyped-def]
    # Supabase's `postgres`: not superuser; CREATEROLE, CREATEDB, BYPASSRLS.
    with server.admin() as admin:
        if not admin.execute("select 1 from pg_roles where rolname = %s", (OWNER,)).fetchone():
            admin.execute(
                sql.SQL("create role {} login createrole createdb bypassrls").format(
                    sql.Identifier(OWNER)
                )
            )
            server.roles.add(OWNER)
    return OWNER


@pytest.fixture(scope="session")
def project_template(server, owner_role: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The project, set up once: auth.uid(), pgresilience installed by the
    owner, table `todos` (RLS by auth.uid()) managed."""
    name = f"pgr_supa_tpl_{uuid.uuid4().hex[:12]}"
    server.create_database(name, owner=owner_role)
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as admin:
            admin.execute(AUTH)
        installer.install(server.dsn(name, user=owner_role), plpython=False, event_triggers=False)
        with psycopg.connect(server.dsn(name, user=owner_role), autocommit=True) as owner:
            owner.execute(APP)
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def project(server, owner_role: str, project_template: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Superuser conninfo of a fresh copy of the project's database."""
    name = f"pgr_supa_{uuid.uuid4().hex[:12]}"
    server.create_database(name, template=project_template, owner=owner_role)
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def owner_dsn(server, project: str, owner_role: str) -> str:  # type: ignore[no-untyped-def]
    """The project's connection string as its owner (what the app's server uses)."""
    return str(server.dsn(conninfo_to_dict(project)["dbname"], user=owner_role))


@pytest.fixture
def authenticator(project: str) -> Iterator[psycopg.Connection]:  # type: ignore[type-arg]
    """PostgREST's connection: `authenticator`, autocommit, one request at a time."""
    with psycopg.connect(project, user="authenticator", autocommit=True) as conn:
        yield conn


@dataclass
class Pooler:
    """PgBouncer in transaction mode, as Supabase's pooler on port 6543; the
    client's user name is passed through, so `authenticator` and the owner
    log in as themselves."""

    port: int
    address: str = "127.0.0.1"

    def dsn(self, direct: str, user: str | None = None) -> str:
        params = conninfo_to_dict(direct)
        params.update(host=self.address, port=str(self.port))
        if user is not None:
            params["user"] = user
        return make_conninfo(**params)


POOLER_INI = """
[databases]
* = host={host} port={server_port}

[pgbouncer]
listen_addr = {address}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = {ignore}
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


@contextmanager
def running_pooler(  # type: ignore[no-untyped-def]
    server,
    port: int | None = None,
    address: str = "127.0.0.1",
    ignore: str = "extra_float_digits,options",
) -> Iterator[Pooler]:
    """A PgBouncer in front of the test server, on `address`:`port` (a free
    port by default), ignoring the startup parameters `ignore`."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        pytest.fail("pgbouncer is not installed: `make setup` installs it (apt package pgbouncer)")
    target = conninfo_to_dict(server.admin_dsn)
    workdir = Path(tempfile.mkdtemp(prefix="pgr-b9-pooler-"))
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    (workdir / "pgbouncer.ini").write_text(
        POOLER_INI.format(
            host=target.get("host", "127.0.0.1"),
            server_port=target.get("port", "5432"),
            address=address,
            port=port,
            ignore=ignore,
            dir=workdir,
        )
    )
    # trust: the server (which trusts local logins) sees each client's own user
    (workdir / "users.txt").write_text(f'"{OWNER}" ""\n"authenticator" ""\n')
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
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
                with socket.create_connection((address, port), timeout=1):
                    break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not start") from exc
                time.sleep(0.1)
        yield Pooler(port, address)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def pooler(server) -> Iterator[Pooler]:  # type: ignore[no-untyped-def]
    with running_pooler(server) as running:
        yield running
