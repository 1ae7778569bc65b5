"""A database owner that is not superuser (CREATEDB, CREATEROLE: Supabase's
`postgres`) installs, uses, upgrades and uninstalls the package; a second
non-superuser role owns tables of its own and manages them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import Server, _unique
from psycopg import sql
from releases import LAST_V2_CORE, install_release, release_tree

from breakit9_upgrade.world import (
    SCHEMA,
    call,
    execute,
    finish_and_check,
    manage_all,
    put_in_flight,
    snapshot,
)

from catalog import definition_listing

CLI = [sys.executable, "-m", "pgresilience.cli"]
OWNER, APP2 = "b9_owner", "b9_app2"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture
def owner_db(server: Server, request: pytest.FixtureRequest) -> Callable[[], str]:
    """owner_db() creates a database as the owner role and returns its conninfo."""
    with server.admin() as admin:
        for role, options in ((OWNER, "createdb createrole"), (APP2, "")):
            if not admin.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                admin.execute(
                    sql.SQL("create role {} login nosuperuser " + options).format(
                        sql.Identifier(role)
                    )
                )
                server.roles.add(role)
        # What manage_table's hint asks a superuser for: the package owner
        # runs the undo of APP2's tables, so it must be able to act as APP2.
        admin.execute(f"grant {APP2} to {OWNER}")
        # The package's roles exist (the suite's template): on PostgreSQL 16+
        # only their creator (or a superuser) may grant them.
        admin.execute(f"grant resilience_user to {APP2}")

    def make() -> str:
        name = _unique("pgr_b9own")
        with psycopg.connect(server.dsn("postgres", user=OWNER), autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        request.addfinalizer(lambda: server.drop_database(name))
        return server.dsn(name, user=OWNER)

    return make


def _app2_schema(owner: psycopg.Connection[object], dsn_app2: str) -> None:
    owner.execute(f"grant create on database {owner.info.dbname} to {APP2}")
    with psycopg.connect(dsn_app2, autocommit=True) as app2:
        app2.execute("create schema app2")
        app2.execute(
            "create table app2.things (id integer primary key, v text, n numeric);"
            " insert into app2.things values (1, 'a', 1.0), (2, null, -0.0), (3, 'ü', null)"
        )


def _things(conn: psycopg.Connection[object]) -> list[str]:
    return [r[0] for r in conn.execute("select t::text from app2.things t order by 1")]


def _app2_tx(dsn_app2: str) -> tuple[str, list[str], list[str]]:
    """An open transaction of the second role: its id, the rows before, after."""
    with psycopg.connect(dsn_app2, autocommit=True) as app2:
        before = _things(app2)
        tx = call(app2, "select resilience.tx_begin(600000, 'app2')")
        execute(app2, tx, "app2.things", "update", {"v": "changed", "n": 2}, {"id": 1})
        execute(app2, tx, "app2.things", "delete", None, {"id": 3})
        execute(app2, tx, "app2.things", "insert", {"id": 4, "v": "new"})
        return str(tx), before, _things(app2)


@pytest.fixture(scope="module")
def v2_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, LAST_V2_CORE)


def test_owner_upgrades_from_v2_core_and_uninstalls_with_both_roles_transactions_in_flight(
    server: Server, owner_db: Callable[[], str], v2_tree: Path
) -> None:
    dsn = owner_db()
    dsn_app2 = dsn.replace(f"user={OWNER}", f"user={APP2}")
    assert f"user={APP2}" in dsn_app2
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(SCHEMA)
        _app2_schema(owner, dsn_app2)
    before_install = definition_listing(dsn)

    install_release(v2_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as owner:
        manage_all(owner)
        with psycopg.connect(dsn_app2, autocommit=True) as app2:
            app2.execute("select resilience.manage_table('app2.things')")
        tx2, rows2, rows2_after = _app2_tx(dsn_app2)
        state = put_in_flight(owner)

        upgraded = _cli("install", "--dsn", dsn)
        assert upgraded.returncode == 0, upgraded
        status = _cli("status", "--dsn", dsn)
        assert status.returncode == 0, status
        # What only a superuser can do, the status lists with its commands.
        assert "[to do]" in status.stdout and "schema_refresh()" in status.stdout, status.stdout
        assert "logical transactions: 4 active" in status.stdout, status.stdout

        finish_and_check(owner, state)
        with psycopg.connect(dsn_app2, autocommit=True) as app2:
            assert _things(app2) == rows2_after
            call(app2, "select resilience.tx_rollback(%s)", tx2)
            assert _things(app2) == rows2

        # Uninstalled by the owner with both roles' transactions open.
        owner.execute("delete from public.orders where region = 'jp'")  # committed above
        initial = snapshot(owner)
        _app2_tx(dsn_app2)
        put_in_flight(owner)
    refused = _cli("uninstall", "--dsn", dsn)
    assert refused.returncode == 6, refused
    forced = _cli("uninstall", "--dsn", dsn, "--force")
    assert forced.returncode == 0, forced
    with psycopg.connect(dsn, autocommit=True) as owner:
        assert snapshot(owner) == initial
    assert definition_listing(dsn) == before_install
    assert _cli("status", "--dsn", dsn).returncode == 5
