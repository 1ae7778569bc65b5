"""A Supabase project on the embedded server (see supa.py): a fresh database
owned by a non-superuser `postgres`-like role that installed pgresilience the
way a migration does (no PL/Python, no event triggers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pgbouncer import free_port, running_pgbouncer
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
    target = conninfo_to_dict(server.admin_dsn)
    if port is None:
        port = free_port()

    def write_config(workdir: Path) -> None:
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

    with running_pgbouncer(write_config, address, port):
        yield Pooler(port, address)


@pytest.fixture(scope="module")
def pooler(server) -> Iterator[Pooler]:  # type: ignore[no-untyped-def]
    with running_pooler(server) as running:
        yield running
