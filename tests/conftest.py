"""Test fixtures: one real PostgreSQL server per session, pgresilience installed
once into a template database, and a fresh copy of it for every test.

Set PGRESILIENCE_TEST_DSN to a superuser conninfo to run against an existing
server instead of the embedded one, or PGRESILIENCE_PG_BIN to the bin directory
of another PostgreSQL installation (`make test-matrix` does, for 14 to 18).

Tests marked `plpython` need PL/Python in the database; on a server without it
(hosted Supabase, the npm builds of `make test-matrix`) they are skipped with
the reason, and the client-side diff runs in their place.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres, find_bin_dir

# Tests press Ctrl-C (SIGINT) in this process and in the commands they start.
# A run started in the background by a non-interactive shell (`make test &`,
# some CI runners) inherits SIGINT ignored, which Python then keeps, and so
# do the commands it starts: those tests would wait for a Ctrl-C that never
# comes. The suite presses it as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Supabase's roles, as the platform creates them: PostgREST logs in as
# `authenticator` and switches to `anon` or `authenticated` per request.
SUPABASE_ROLES = """
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create role authenticator login noinherit;
grant anon, authenticated, service_role to authenticator;
"""


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases and roles on."""

    admin_dsn: str
    roles: set[str] = field(default_factory=set)

    def dsn(self, dbname: str, user: str | None = None) -> str:
        params: dict[str, Any] = {"dbname": dbname}
        if user is not None:
            params["user"] = user
            params.pop("password", None)
        return make_conninfo(self.admin_dsn, **params)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def create_database(
        self, name: str, template: str = "template0", owner: str | None = None
    ) -> str:
        statement = sql.SQL("create database {} template {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if owner is not None:
            statement += sql.SQL(" owner {}").format(sql.Identifier(owner))
        with self.admin() as conn:
            conn.execute(statement)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@dataclass(frozen=True)
class ServerFeatures:
    """What the session's server offers, as installed into the template database."""

    version_num: int  # server_version_num, e.g. 170010
    plpython: bool  # plpython3u could be created (PL/Python schema diff)

    @property
    def major(self) -> int:
        return self.version_num // 10000


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    external = os.environ.get("PGRESILIENCE_TEST_DSN")
    if external:
        yield from _prepared(Server(admin_dsn=external))
        return
    with EmbeddedPostgres() as pg:
        yield from _prepared(Server(admin_dsn=pg.dsn()))


def _prepared(srv: Server) -> Iterator[Server]:
    with srv.admin() as conn:
        existing = {r[0] for r in conn.execute("select rolname from pg_roles")}
        if "authenticated" not in existing:
            conn.execute(SUPABASE_ROLES)
            srv.roles.update({"authenticator", "anon", "authenticated", "service_role"})
    try:
        yield srv
    finally:
        with srv.admin() as conn:
            for role in srv.roles:
                try:
                    conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
                except psycopg.errors.DependentObjectsStillExist:
                    pass  # still used in a database another session owns


@pytest.fixture(scope="session")
def template_db(server: Server) -> Iterator[str]:
    """A database with pgresilience installed, used as the template of every test's."""
    name = _unique("pgr_template")
    server.create_database(name)
    installer.install(server.dsn(name))
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture(scope="session")
def server_features(server: Server, template_db: str) -> ServerFeatures:
    with psycopg.connect(server.dsn(template_db), autocommit=True) as conn:
        row = conn.execute(
            "select current_setting('server_version_num')::integer,"
            " exists (select from pg_extension where extname = 'plpython3u')"
        ).fetchone()
    assert row is not None
    return ServerFeatures(version_num=row[0], plpython=row[1])


@pytest.fixture(autouse=True)
def _server_requirements(request: pytest.FixtureRequest) -> None:
    """Skips, saying why, a test marked `plpython` on a server without PL/Python,
    `min_server_version(n)` on a server older than n, `pg_dump` where the
    server's installation has no pg_dump/pg_restore. Asks for the server only
    when the test has such a marker."""
    node = request.node
    plpython = node.get_closest_marker("plpython")
    minimum = node.get_closest_marker("min_server_version")
    if plpython is None and minimum is None and node.get_closest_marker("pg_dump") is None:
        return
    if node.get_closest_marker("pg_dump") is not None:
        bin_dir = find_bin_dir()
        if not (bin_dir / "pg_dump").exists() or not (bin_dir / "pg_restore").exists():
            pytest.skip(f"no pg_dump/pg_restore in this PostgreSQL installation ({bin_dir})")
    features: ServerFeatures = request.getfixturevalue("server_features")
    if plpython is not None and not features.plpython:
        pytest.skip(
            f"PL/Python (plpython3u) is not available on this PostgreSQL {features.major} "
            "server: the schema diff runs client-side here (the 'client' variants)"
        )
    if minimum is not None and features.major < minimum.args[0]:
        pytest.skip(f"needs PostgreSQL {minimum.args[0]}+ ({minimum.kwargs.get('reason', '')})")


@pytest.fixture
def database(server: Server, template_db: str) -> Iterator[str]:
    """Name of a fresh database with pgresilience installed, dropped afterwards."""
    name = _unique("pgr_test")
    server.create_database(name, template=template_db)
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def dsn(server: Server, database: str) -> str:
    """Superuser conninfo of a fresh database with pgresilience installed."""
    return server.dsn(database)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """Autocommit superuser connection to the test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def bare_dsn(server: Server) -> Iterator[str]:
    """Conninfo of a fresh database with nothing installed."""
    name = _unique("pgr_bare")
    server.create_database(name)
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def make_role(server: Server, dsn: str) -> Callable[..., str]:
    """make_role(name, login=True, superuser=False, createrole=False, member_of=())
    creates the role (once per session) and returns its conninfo for the test
    database. Roles are cluster-wide and dropped at the end of the session."""

    def create(
        name: str,
        *,
        login: bool = True,
        superuser: bool = False,
        createrole: bool = False,
        member_of: tuple[str, ...] = (),
    ) -> str:
        options = sql.SQL(" ").join(
            sql.SQL(word)
            for word in (
                "login" if login else "nologin",
                "superuser" if superuser else "nosuperuser",
                "createrole" if createrole else "nocreaterole",
            )
        )
        with server.admin() as admin:
            exists = admin.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
            if not exists:
                admin.execute(sql.SQL("create role {} ").format(sql.Identifier(name)) + options)
                server.roles.add(name)
            for group in member_of:
                admin.execute(
                    sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(name))
                )
        dbname = conninfo_to_dict(dsn)["dbname"]
        assert isinstance(dbname, str)
        return server.dsn(dbname, user=name)

    return create
