"""Installing, upgrading and uninstalling pgresilience in a database."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from alembic import command
from psycopg.conninfo import make_conninfo

from pgresilience import installer
from pgresilience._resources import data_path
from pgresilience.embedded import EmbeddedPostgres, find_bin_dir
from pgresilience.installer import install, installed_revision, uninstall
from pgresilience.status import head_revision

from catalog import catalog_listing, role_listing

if TYPE_CHECKING:
    from conftest import ServerFeatures

EXPECTED_OBJECTS = Path(__file__).with_name("expected_objects.txt")

PUBLIC_API = """
select proname::text, pg_get_function_arguments(oid) from pg_proc
where pronamespace = 'resilience'::regnamespace and proname !~ '^_'
    and prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
order by 1, 2
"""
WRAPPERS = """
select proname::text, pg_get_function_arguments(oid) from pg_proc
where pronamespace = %s::regnamespace order by 1, 2
"""


# Roles are cluster-wide; other tests add their own members to ours.
PACKAGE_ROLES = {"resilience_user", "resilience_admin"}
SUPABASE_ROLES = {"anon", "authenticated", "service_role", "authenticator"}


def _is_package_role_line(line: str) -> bool:
    words = line.split()
    if words[0] == "role":
        return words[1] in PACKAGE_ROLES
    member, group = words[1], words[3]
    return group in PACKAGE_ROLES and member in PACKAGE_ROLES | SUPABASE_ROLES


def package_objects(bare_dsn: str) -> list[str]:
    """What install adds to a bare database, by name, plus its roles."""
    before = set(catalog_listing(bare_dsn))
    install(bare_dsn)
    roles = [line for line in role_listing(bare_dsn) if _is_package_role_line(line)]
    return sorted(set(catalog_listing(bare_dsn)) - before) + roles


def plpython_only(line: str) -> bool:
    """An object of expected_objects.txt that exists only where PL/Python does:
    the extension, and the functions of sql/plpython/."""
    functions = {
        match
        for path in (data_path("sql") / "plpython").glob("*.sql")
        for match in re.findall(r"create or replace function (\S+)\(", path.read_text())
    }
    return line == "extension plpython3u" or any(
        line.startswith(f"function {name}(") for name in functions
    )


def test_install_creates_exactly_the_listed_objects(
    bare_dsn: str, server_features: ServerFeatures
) -> None:
    """Every object the package creates, listed in tests/expected_objects.txt, so
    that any change to it shows in review. Regenerate with
    PGRESILIENCE_UPDATE_EXPECTED=1 (on a server with PL/Python)."""
    created = package_objects(bare_dsn)
    if os.environ.get("PGRESILIENCE_UPDATE_EXPECTED") and server_features.plpython:
        EXPECTED_OBJECTS.write_text("\n".join(created) + "\n")
    expected = EXPECTED_OBJECTS.read_text().splitlines()
    if not server_features.plpython:
        expected = [line for line in expected if not plpython_only(line)]
    assert created == expected


def test_install_uninstall_install_leaves_no_stray_object(bare_dsn: str) -> None:
    pristine = catalog_listing(bare_dsn)
    install(bare_dsn)
    first = catalog_listing(bare_dsn)

    uninstall(bare_dsn)
    assert catalog_listing(bare_dsn) == pristine

    install(bare_dsn)
    assert catalog_listing(bare_dsn) == first


def test_install_and_uninstall_are_idempotent(bare_dsn: str) -> None:
    first = install(bare_dsn)
    listing = catalog_listing(bare_dsn)
    again = install(bare_dsn)
    assert catalog_listing(bare_dsn) == listing
    assert again.revision == first.revision == head_revision()
    assert any("already at revision" in line for line in again.lines())

    uninstall(bare_dsn)
    assert uninstall(bare_dsn) == ["pgresilience is not installed here: nothing to do"]


@pytest.mark.usefixtures("template_db")
def test_uninstall_keeps_the_roles_while_another_database_uses_them(bare_dsn: str) -> None:
    install(bare_dsn)
    roles = role_listing(bare_dsn)
    uninstall(bare_dsn)
    # The session's template database still has pgresilience installed.
    assert role_listing(bare_dsn) == roles


def test_app_alembic_version_table_is_never_touched(bare_dsn: str) -> None:
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute("create table public.alembic_version (version_num varchar(32) primary key)")
        conn.execute("insert into public.alembic_version values ('app_rev_42')")
    install(bare_dsn)
    uninstall(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        rows = conn.execute("select version_num from public.alembic_version").fetchall()
    assert rows == [("app_rev_42",)]


def test_alembic_downgrade_base_removes_everything_and_upgrade_head_works_again(
    bare_dsn: str,
) -> None:
    pristine = catalog_listing(bare_dsn)
    install(bare_dsn)
    installed = catalog_listing(bare_dsn)

    with installer._connect(bare_dsn) as (sa_conn, _raw):
        command.downgrade(installer._alembic_config(sa_conn), "base")
    assert catalog_listing(bare_dsn) == pristine

    with installer._connect(bare_dsn) as (sa_conn, _raw):
        command.upgrade(installer._alembic_config(sa_conn), "head")
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        assert installed_revision(conn) == head_revision()
    install(bare_dsn)
    assert catalog_listing(bare_dsn) == installed


def test_wrappers_in_the_exposed_schema_cover_the_whole_api(bare_dsn: str) -> None:
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute("create schema api")
    report = install(bare_dsn, expose="api")
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        public_api = conn.execute(PUBLIC_API).fetchall()
        wrappers = conn.execute(WRAPPERS, ("api",)).fetchall()
    assert len(report.exposed) == len(public_api) > 0
    assert wrappers == public_api

    # Re-installing with --expose none removes exactly those wrappers.
    install(bare_dsn, expose=None)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        assert conn.execute(WRAPPERS, ("api",)).fetchall() == []


def test_wrappers_forward_only_input_arguments(conn: psycopg.Connection[Any]) -> None:
    """A public function with OUT, INOUT, TABLE or VARIADIC parameters gets a
    wrapper that takes the same arguments and returns the same rows (none
    has them today; the next one must not break `install --expose`)."""
    conn.execute(
        """
        create function resilience.zz_out(a int, inout b int, out c text)
            language sql as $$ select b + a, 'c' || a $$;
        create function resilience.zz_table(a int) returns table (x int, "y z" text)
            language sql as $$ select g, g::text from generate_series(1, a) as g $$;
        create function resilience.zz_variadic(variadic items int[]) returns int
            language sql as $$ select sum(i)::int from unnest(items) as i $$;
        create schema api_out
        """
    )
    conn.execute("select resilience._expose('api_out')")
    assert conn.execute("select * from api_out.zz_out(1, 2)").fetchall() == [(3, "c1")]
    assert conn.execute("select * from api_out.zz_out(a => 5, b => 1)").fetchall() == [(6, "c5")]
    assert conn.execute("select * from api_out.zz_table(2)").fetchall() == [(1, "1"), (2, "2")]
    assert conn.execute("select api_out.zz_variadic(1, 2, 3)").fetchone() == (6,)
    assert conn.execute("select api_out.zz_variadic(variadic array[4, 5])").fetchone() == (9,)


def test_non_superuser_owner_installs_everything_it_may(server, make_role) -> None:  # type: ignore[no-untyped-def]
    make_role("app_owner")
    name = "pgr_owned_by_app_owner"
    server.create_database(name, owner="app_owner")
    try:
        owner_dsn = server.dsn(name, user="app_owner")
        report = install(owner_dsn)
        warnings = " ".join(report.warnings)
        assert not report.plpython and "PL/Python" in warnings
        assert not report.event_triggers and "schema_refresh()" in warnings
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            assert installed_revision(conn) == head_revision()
            owner = conn.execute(
                "select nspowner::regrole::text from pg_namespace where nspname = 'resilience'"
            ).fetchone()
        assert owner == ("app_owner",)
        uninstall(owner_dsn)
    finally:
        server.drop_database(name)


def test_a_role_that_may_not_create_the_schema_gets_psycopgs_error_and_nothing_is_left(
    bare_dsn: str, make_role
) -> None:  # type: ignore[no-untyped-def]
    """Whichever step fails (here Alembic's first revision), install raises
    the psycopg error with its SQLSTATE, never SQLAlchemy's wrapper of it,
    and the database is as it was (one transaction)."""
    make_role("pgr_may_not_create")
    weak_dsn = make_conninfo(bare_dsn, user="pgr_may_not_create")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        install(weak_dsn)
    with psycopg.connect(bare_dsn) as conn:
        assert installed_revision(conn) is None
        assert conn.execute("select to_regnamespace('resilience')").fetchone() == (None,)


@pytest.fixture(scope="module")
def no_plpython_dsn() -> Iterator[str]:
    """A server whose installation lacks plpython3u: a relocated copy of the
    PostgreSQL tree (PostgreSQL finds its share/ and lib/ relative to its
    binaries) without the extension's files."""
    # World-readable: the server runs as an unprivileged user when we are root.
    root = Path(tempfile.mkdtemp(prefix="pgresilience-no-plpython-"))
    bin_dir = find_bin_dir()
    if (bin_dir.parent / "share").is_dir():
        # A self-contained tree (bin/, lib/, share/: the npm builds of `make test-matrix`).
        lib_copy = root / "pg"
        shutil.copytree(bin_dir.parent, lib_copy, symlinks=True)
        share_copy = lib_copy / "share"
    else:
        # Debian's: /usr/lib/postgresql/<major> and /usr/share/postgresql/<major>.
        major = bin_dir.parent.name
        lib_copy = root / "usr/lib/postgresql" / major
        shutil.copytree(bin_dir.parent, lib_copy, symlinks=False)
        share_copy = root / "usr/share/postgresql" / major
        shutil.copytree(Path("/usr/share/postgresql") / major, share_copy)
    for path in [*share_copy.rglob("extension/*plpython*"), *lib_copy.glob("lib/**/*plpython*.so")]:
        path.unlink()
    root.chmod(0o755)
    try:
        with EmbeddedPostgres(bin_dir=lib_copy / "bin") as pg:
            yield pg.dsn()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_install_without_plpython_available(no_plpython_dsn: str) -> None:
    """On a server without the plpython3u extension the installer says so and
    installs everything else (as on hosted Supabase)."""
    report = install(no_plpython_dsn)
    assert not report.plpython
    assert any("PL/Python" in w for w in report.warnings)
    with psycopg.connect(no_plpython_dsn, autocommit=True) as conn:
        assert installed_revision(conn) == head_revision()
        languages = conn.execute("select lanname from pg_language").fetchall()
    assert ("plpython3u",) not in languages
    uninstall(no_plpython_dsn)


def test_install_schedules_the_reaper_with_pg_cron(server) -> None:  # type: ignore[no-untyped-def]
    """pg_cron lives in one database of the server (here `postgres`, as on
    Supabase); installing there with schedule_reaper adds one job, and
    uninstall removes it."""
    dsn = server.dsn("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        available = conn.execute(
            "select 1 from pg_available_extensions where name = 'pg_cron'"
        ).fetchone()
        if not available or conn.execute("show shared_preload_libraries").fetchone() != (
            "pg_cron",
        ):
            pytest.skip("pg_cron is not preloaded on this server")
        conn.execute("create extension if not exists pg_cron")
    try:
        report = install(dsn, expose=None, schedule_reaper="* * * * *")
        assert any("pg_cron every * * * * *" in line for line in report.actions)
        with psycopg.connect(dsn, autocommit=True) as conn:
            jobs = conn.execute("select schedule, command from cron.job").fetchall()
        assert jobs == [("* * * * *", "select resilience.tx_reap()")]
        uninstall(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("select count(*) from cron.job").fetchone() == (0,)
    finally:
        uninstall(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("drop extension if exists pg_cron")


def test_without_pg_cron_the_reaper_is_not_scheduled_and_install_says_so(bare_dsn: str) -> None:
    report = install(bare_dsn, schedule_reaper="* * * * *")
    assert any("pg_cron is not installed" in w for w in report.warnings)
