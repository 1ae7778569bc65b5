"""The wrappers of the exposed schema behave as `resilience.*` does, errors
included (same SQLSTATE), and installing them never overwrites or shadows a
function of the app's own."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from pgresilience import installer

from .supa import ALICE, Rest, sqlstate

UNKNOWN = str(uuid.UUID(int=7))

# (function, arguments; "TX" stands for an active transaction of the caller's), SQLSTATE
BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("tx_begin", {"timeout_ms": 0}, "22023"),
    ("tx_begin", {"label": "x" * 1001}, "22023"),
    ("tx_status", {"tx_id": UNKNOWN}, "RZ001"),
    ("tx_commit", {"tx_id": UNKNOWN}, "RZ001"),
    ("tx_execute", {"tx_id": "TX", "table_name": "nope", "operation": "insert"}, "42P01"),
    ("tx_execute", {"tx_id": "TX", "table_name": "todos", "operation": "explode"}, "22023"),
    (
        "tx_execute",
        {"tx_id": "TX", "table_name": "todos", "operation": "insert", "data": {"nope": 1}},
        "42703",
    ),
    (
        "tx_execute",
        {"tx_id": "TX", "table_name": "todos", "operation": "update", "data": {"title": "t"}},
        "22023",
    ),
    (
        "tx_execute",
        {
            "tx_id": "TX",
            "table_name": "resilience.transactions",
            "operation": "delete",
            "match": {"status": "active"},
        },
        "22023",
    ),
    ("tx_rollback_to", {"tx_id": "TX", "name": "missing"}, "RZ006"),
    ("tx_images", {"tx_id": "TX"}, "42501"),
    ("tx_run", {"operations": [{"table": "todos", "operation": "x"}]}, "22023"),
    ("schema_current", {}, "42501"),
]


def test_a_wrapper_fails_with_the_sqlstate_of_the_function_it_wraps(
    authenticator: psycopg.Connection[Any],
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    for function, template, expected in BAD_CALLS:
        args = {k: (tx if v == "TX" else v) for k, v in template.items()}
        for schema in ("public", "resilience"):
            failed = sqlstate(lambda s=schema, f=function, a=args: alice.rpc(f, schema=s, **a))
            assert failed == expected, (schema, function, args)


def test_an_app_table_named_like_a_wrapper_changes_nothing(
    owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("create table tx_status (tx_id uuid primary key, note text)")
        owner.execute("grant select on tx_status to authenticated")
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    assert alice.rpc("tx_status", tx_id=tx)["status"] == "active"
    assert alice.request("select count(*) from tx_status") == [(0,)]


APP_FUNCTIONS = [
    # Same name and arguments: install used to overwrite it silently (and
    # uninstall then dropped it).
    "create function public.tx_status(tx_id uuid) returns jsonb language sql"
    " as $$ select '{\"mine\": true}'::jsonb $$",
    # Another result type: install failed with a hint to drop the app's function.
    "create function public.tx_status(id uuid) returns text language sql as $$ select 'mine' $$",
    # An overload: the app's own `select tx_begin()` became ambiguous (42725).
    "create function public.tx_begin() returns text language sql as $$ select 'mine' $$",
]


def test_install_refuses_to_replace_or_overload_an_app_function_of_a_wrapper_name(
    server: Any, owner_role: str
) -> None:
    name = f"pgr_supa_{uuid.uuid4().hex[:12]}"
    server.create_database(name, owner=owner_role)
    definition = (
        "select pg_get_functiondef(p.oid) from pg_proc as p"
        " where pronamespace = 'public'::regnamespace"
    )
    try:
        owner_dsn = server.dsn(name, user=owner_role)
        for function in APP_FUNCTIONS:
            with psycopg.connect(owner_dsn, autocommit=True) as owner:
                owner.execute("drop function if exists public.tx_status, public.tx_begin")
                owner.execute(function)
                before = owner.execute(definition).fetchall()
            with pytest.raises(psycopg.Error) as refused:
                installer.install(owner_dsn, plpython=False, event_triggers=False)
            assert refused.value.sqlstate == "42723", function
            with psycopg.connect(owner_dsn, autocommit=True) as owner:
                assert owner.execute(definition).fetchall() == before
                assert owner.execute("select to_regnamespace('resilience')").fetchone() == (None,)
        # Elsewhere it installs, and leaves the app's function alone.
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            owner.execute("create schema api")
        installer.install(owner_dsn, plpython=False, event_triggers=False, expose="api")
        installer.uninstall(owner_dsn)
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            assert owner.execute(definition).fetchall() == before
    finally:
        server.drop_database(name)


def test_installing_again_keeps_the_wrappers_and_their_grants(
    owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("grant execute on function public.tx_status(uuid) to anon")
    installer.install(owner_dsn, plpython=False, event_triggers=False)
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    assert alice.rpc("tx_status", tx_id=tx)["status"] == "active"
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        assert owner.execute(
            "select has_function_privilege('anon', 'public.tx_status(uuid)', 'execute')"
        ).fetchone() == (True,)


def test_an_exposed_schema_named_with_capitals_takes_the_wrappers_and_keeps_them(
    owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    """`--expose Api` names the schema "Api" (as PostgREST's db-schemas does):
    it used to be read as an identifier (api), and the install failed."""
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute('create schema "Api"; grant usage on schema "Api" to authenticated')
    installer.install(owner_dsn, plpython=False, event_triggers=False, expose="Api")
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute('grant execute on function "Api".tx_status(uuid) to anon')
    installer.install(owner_dsn, plpython=False, event_triggers=False, expose="Api")
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin", schema="Api")
    assert alice.rpc("tx_status", schema="Api", tx_id=tx)["status"] == "active"
    assert sqlstate(lambda: alice.rpc("tx_status", tx_id=tx)) == "42883"  # none left in public
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        kept = owner.execute(
            """select has_function_privilege('anon', '"Api".tx_status(uuid)', 'execute')"""
        ).fetchone()
    assert kept == (True,)


def test_wrappers_the_registry_lost_are_taken_back_by_the_next_install(
    project: str, owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    """A restore of the app's schema alone brings our wrappers back without
    their registry rows: they carry our comment, and install adopts them
    (the app-function refusal above is for functions without it)."""
    with psycopg.connect(project, autocommit=True) as admin:
        admin.execute("delete from resilience.exposed_functions")
    installer.install(owner_dsn, plpython=False, event_triggers=False)
    alice = Rest(authenticator, sub=ALICE)
    assert alice.rpc("tx_status", tx_id=alice.rpc("tx_begin"))["status"] == "active"
    with psycopg.connect(project, autocommit=True) as admin:
        registered = admin.execute("select count(*) from resilience.exposed_functions").fetchone()
        exposed = admin.execute(
            "select count(*) from pg_proc where pronamespace = 'public'::regnamespace"
        ).fetchone()
    assert registered == exposed
