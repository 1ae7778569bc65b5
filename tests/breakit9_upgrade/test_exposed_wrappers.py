"""The rpc() wrappers in the exposed schema never take over a function of
the app's own (uninstall would then drop it), and moving them from one
schema to another leaves what a fresh install there would."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from conftest import Server, _unique

from pgresilience import installer

from catalog import definition_listing

APP_FUNCTION = """
create function public.tx_status(tx_id uuid) returns jsonb language sql
as $$ select jsonb_build_object('the app''s own', tx_id) $$
"""


def _fresh(server: Server, request: pytest.FixtureRequest) -> str:
    name = _unique("pgr_b9")
    server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return server.dsn(name)


def _app_function(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(
        "select p.oid::regprocedure::text, prosrc from pg_proc p"
        " where proname = 'tx_status' and pronamespace = 'public'::regnamespace"
    ).fetchall()


def test_an_app_function_with_a_wrappers_signature_is_refused_kept_and_survives_uninstall(
    server: Server, request: pytest.FixtureRequest
) -> None:
    dsn = _fresh(server, request)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema api")
        conn.execute(APP_FUNCTION)
        mine = _app_function(conn)
        before = definition_listing(dsn)
        with pytest.raises(psycopg.errors.DuplicateFunction, match="tx_status"):
            installer.install(dsn)
        assert definition_listing(dsn) == before  # all or nothing

        installer.install(dsn, expose="api")
        assert _app_function(conn) == mine
        assert conn.execute("select (api.tx_begin() is not null)").fetchone() == (True,)
        installer.install(dsn, expose=None)
        installer.install(dsn, expose="api")
        installer.uninstall(dsn, force=True)
        assert _app_function(conn) == mine


def test_wrappers_moved_between_schemas_leave_what_a_fresh_install_there_would(
    server: Server, request: pytest.FixtureRequest
) -> None:
    dsn = _fresh(server, request)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('create schema api; create schema "Ü ""x"""; create schema "Api"')
    installer.install(dsn, expose='Ü "x"')
    installer.install(dsn, expose="Api")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute('select "Api".tx_begin() is not null').fetchone() == (True,)
    installer.install(dsn)
    fresh = _fresh(server, request)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute('create schema api; create schema "Ü ""x"""; create schema "Api"')
    installer.install(fresh)
    assert definition_listing(dsn) == definition_listing(fresh)
