"""Replaying a Supabase-style app's 58 migrations, one psql process per file
as migration tools do, keeps every promise of schema version tracking
(DESIGN.md section 2, docs/schema_tracking.md, docs/cli.md `plan`):

* exactly one version per committed migration that changes a tracked
  object, none for one that changes nothing tracked (grants, comments,
  triggers, domains, extensions in an ignored schema), fails or rolls back;
* its change records name the real difference, rated as the severity table
  says (EXPECTED below, checked against docs/schema_tracking.md by hand);
* `schema_refresh()` right after each migration finds nothing left to record;
* `pgresilience plan FILE` run just before reports what the commit then
  records and exits 0 below `high`, 1 at or above it, 2 when the migration
  fails or cannot run in a transaction (CONCURRENTLY, its own BEGIN/ROLLBACK);
* with the diff off the commit path (`schema_diff_at_commit = off`), the
  first reader rates each version the same, and so does the client from the
  deltas a read-only reader gets;
* the final schema hashes like the same schema built another way (pg_dump's
  script, the history squashed into one transaction), and survives
  pg_dump/pg_restore with nothing to record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience.schema.diff import compute_changes
from tests.breakit5_schema.conftest import (
    APP,
    MIGRATIONS,
    Plan,
    current_hash,
    last_version,
    plan,
    psql,
    records,
    refresh,
    runs_in_one_transaction,
    versions_since,
)

pytestmark = pytest.mark.plpython

# Per migration (file name without its timestamp): the change records of its
# one version as (type, table or object, column, severity); None: no version.
EXPECTED: dict[str, set[tuple[Any, ...]] | None] = {
    "extensions": None,
    "enums": {
        ("enum_added", "public.order_status", None, "low"),
        ("enum_added", "public.user_role", None, "low"),
    },
    "profiles": {
        ("table_added", "public.profiles", None, "low"),
    },
    "handle_new_user": {
        ("function_added", "public.handle_new_user()", None, "low"),
    },
    "domains_and_types": None,
    "organizations": {
        ("function_added", "private.is_member(org bigint)", None, "low"),
        ("table_added", "public.audit_events", None, "low"),
        ("table_added", "public.memberships", None, "low"),
        ("table_added", "public.organizations", None, "low"),
    },
    "products": {
        ("function_added", "public.search_products(q text)", None, "low"),
        ("table_added", "public.products", None, "low"),
    },
    "orders_partitioned": {
        ("table_added", "public.orders", None, "low"),
        ("table_added", "public.orders_2026_01", None, "low"),
        ("table_added", "public.orders_2026_02", None, "low"),
    },
    "order_items": {
        ("table_added", "public.order_items", None, "low"),
    },
    "order_status_values": {
        ("enum_changed", "public.order_status", None, "low"),
    },
    "reporting_views": {
        ("view_added", "public.order_totals", None, "low"),
        ("view_added", "public.organization_dashboard", None, "low"),
        ("view_added", "public.public_profiles", None, "low"),
    },
    "product_stats_matview": {
        ("index_added", "public.product_stats", None, "low"),
        ("view_added", "public.product_stats", None, "low"),
    },
    "grants_and_comments": None,
    "profiles_bio": {
        ("column_added", "public.profiles", "bio", "low"),
    },
    "products_currency": {
        ("column_added", "public.products", "currency", "low"),
    },
    "invite_codes": {
        ("column_added", "public.organizations", "invite_code", "high"),
    },
    "rename_full_name": {
        ("column_renamed", "public.profiles", "display_name", "high"),
    },
    "widen_display_name": {
        ("column_type_changed", "public.profiles", "display_name", "low"),
        ("view_changed", "public.public_profiles", None, "high"),
    },
    "description_required": {
        ("nullability_changed", "public.products", "description", "high"),
    },
    "avatar_optional": {
        ("nullability_changed", "public.audit_events", "action", "medium"),
    },
    "updated_at_default": {
        ("default_changed", "public.profiles", "updated_at", "low"),
    },
    "total_check_not_valid": {
        ("constraint_added", "public.orders", None, "low"),
        ("constraint_added", "public.orders_2026_01", None, "low"),
        ("constraint_added", "public.orders_2026_02", None, "low"),
    },
    "total_check_validate": {
        ("constraint_changed", "public.orders", None, "low"),
        ("constraint_changed", "public.orders_2026_01", None, "low"),
        ("constraint_changed", "public.orders_2026_02", None, "low"),
    },
    "order_items_product_fk": {
        ("constraint_added", "public.order_items", None, "medium"),
    },
    "products_name_trgm_concurrently": {
        ("index_added", "public.products", None, "low"),
    },
    "drop_search_index_concurrently": {
        ("index_dropped", "public.memberships", None, "medium"),
    },
    "slug_unique_index_concurrently": {
        ("index_added", "public.organizations", None, "low"),
    },
    "slug_unique_using_index": {
        ("constraint_added", "public.organizations", None, "low"),
    },
    "create_march": {
        ("table_added", "public.orders_2026_03", None, "low"),
    },
    "attach_march": {
        ("constraint_added", "public.orders_2026_03", None, "medium"),
        ("constraint_dropped", "public.orders_2026_03", None, "medium"),
        ("index_added", "public.orders_2026_03", None, "medium"),
        ("primary_key_changed", "public.orders_2026_03", None, "high"),
        ("table_changed", "public.orders_2026_03", None, "medium"),
    },
    "detach_january": {
        ("table_changed", "public.orders_2026_01", None, "high"),
    },
    "drop_january": {
        ("table_dropped", "public.orders_2026_01", None, "critical"),
    },
    "profiles_policy_initplan": {
        ("policy_changed", "public.profiles", None, "high"),
    },
    "is_member_admins": {
        ("function_changed", "private.is_member(org bigint)", None, "medium"),
    },
    "my_organizations": {
        ("function_added", "public.my_organizations()", None, "low"),
    },
    # The defaults 'member'::user_role now print 'user': the same value.
    "rename_role_value": {
        ("enum_changed", "public.user_role", None, "high"),
    },
    "rename_products": {
        ("table_renamed", "public.catalog_items", None, "high"),
    },
    "rename_is_member": {
        ("function_renamed", "private.has_org_access(org bigint)", None, "high"),
    },
    "public_profiles_bio": {
        ("view_changed", "public.public_profiles", None, "medium"),
    },
    "rename_order_totals": {
        ("view_renamed", "public.order_summary", None, "high"),
    },
    # Dropped and created again with the same text: a version, no change.
    "recreate_order_summary_same": set(),
    "product_stats_orders": {
        ("view_changed", "public.product_stats", None, "medium"),
    },
    "discount_bigint": {
        ("column_type_changed", "public.order_items", "discount_percent", "high"),
    },
    "audit_rls_off": {
        ("rls_changed", "public.audit_events", None, "critical"),
    },
    "drop_website": {
        ("column_dropped", "public.profiles", "website", "critical"),
    },
    "order_items_identity": {
        ("column_changed", "public.order_items", "id", "medium"),
        ("default_changed", "public.order_items", "id", "low"),
    },
    "search_plain_column": {
        ("column_changed", "public.catalog_items", "search", "medium"),
    },
    "rename_private_schema": {
        ("function_renamed", "internal.has_org_access(org bigint)", None, "high"),
    },
    "dynamic_index": {
        ("index_added", "public.orders_2026_02", None, "medium"),
        ("index_added", "public.orders_2026_03", None, "medium"),
    },
    "email_domain_type": {
        ("column_added", "public.audit_events", "contact", "low"),
        ("column_type_changed", "public.catalog_items", "price", "low"),
    },
    "fails_halfway": None,
    "rolled_back": None,
    # The history goes on after a failed and a rolled-back migration.
    # Two records: now SECURITY DEFINER (high), its search_path pinned (medium).
    "search_products_definer": {
        ("function_changed", "public.search_products(q text)", None, "high"),
        ("function_changed", "public.search_products(q text)", None, "medium"),
    },
    "profiles_force_rls": {
        ("rls_changed", "public.profiles", None, "medium"),
    },
    "orders_policy_anon": {
        ("policy_changed", "public.orders", None, "high"),
    },
    "audit_unlogged": {
        ("table_changed", "public.audit_events", None, "high"),
    },
    "public_profiles_invoker": {
        ("view_changed", "public.public_profiles", None, "medium"),
    },
    "recreate_trigger": None,
}

_SEVERITY = ["low", "medium", "high", "critical"]


def _name(file: Path) -> str:
    return file.stem.split("_", 1)[1]


@dataclass
class Replayed:
    exit_code: int
    plan: Plan
    versions: list[dict[str, Any]]
    refresh: dict[str, Any]
    # Setting schema_diff_at_commit off: each version's changes as the client
    # computes them from the deltas a read-only reader gets, before the
    # database rates it at its first read (`versions`).
    client_changes: list[list[dict[str, Any]]] | None = None
    # The NOTIFY resilience_schema payloads heard after the file ran.
    notified: list[dict[str, Any]] | None = None


def _notified(listener: psycopg.Connection[Any]) -> list[psycopg.Notify]:
    """What the listener has been sent so far. The NOTIFY went out at the
    commit, before psql exited; the listener's backend passes it on before it
    answers the next query, so one round trip is enough (no waiting)."""
    listener.execute("select 1")
    return list(listener.notifies(timeout=0))


def _replay(
    server: Any, template_db: str, name: str, *, first_read: bool
) -> Iterator[tuple[str, dict[str, Replayed]]]:
    server.drop_database(name)
    dsn = server.create_database(name, template=template_db)
    listener = psycopg.connect(dsn, autocommit=True)
    try:
        assert psql(dsn, APP / "platform.sql") == 0
        listener.execute("listen resilience_schema")
        if first_read:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "update resilience.settings set value = 'off'"
                    " where name = 'schema_diff_at_commit'"
                )
        results: dict[str, Replayed] = {}
        for file in MIGRATIONS:
            before = last_version(dsn)
            planned = plan(dsn, file)
            assert last_version(dsn) == before, f"plan of {file.name} recorded a version"
            code = psql(dsn, file, single_transaction=runs_in_one_transaction(file))
            client = None
            if first_read:
                with psycopg.connect(dsn) as reader:
                    reader.read_only = True
                    rows = reader.execute(
                        "select x from resilience.schema_changes_since(%s) as x", (before,)
                    ).fetchall()
                assert all(x["changes"] is None for (x,) in rows)
                client = [compute_changes(x["deltas"]) for (x,) in rows]
            heard = [json.loads(n.payload) for n in _notified(listener)]
            versions = versions_since(dsn, before)
            results[_name(file)] = Replayed(code, planned, versions, refresh(dsn), client, heard)
            _notified(listener)  # the refresh's, if any
        yield dsn, results
    finally:
        listener.close()
        server.drop_database(name)


@pytest.fixture(scope="module")
def replayed(server: Any, template_db: str) -> Iterator[tuple[str, dict[str, Replayed]]]:
    """The whole history, replayed once into a fresh database: per file, the
    plan run just before it, its psql exit code, the versions it left and the
    refresh run just after."""
    yield from _replay(server, template_db, "pgr_b5_history", first_read=False)


@pytest.fixture(scope="module")
def replayed_first_read(server: Any, template_db: str) -> Iterator[tuple[str, dict[str, Replayed]]]:
    """The same, with the diff off the commit path (schema_diff_at_commit off)."""
    yield from _replay(server, template_db, "pgr_b5_history_lazy", first_read=True)


def test_history_is_at_least_40_migrations_each_with_an_expectation() -> None:
    assert len(MIGRATIONS) >= 40
    assert [_name(f) for f in MIGRATIONS] == list(EXPECTED)


@pytest.mark.parametrize("migration", list(EXPECTED))
def test_each_migration_is_one_version_with_its_real_changes(
    replayed: tuple[str, dict[str, Replayed]], migration: str
) -> None:
    result = replayed[1][migration]
    expected = EXPECTED[migration]
    if expected is None:
        assert result.versions == []
        return
    assert result.exit_code == 0
    assert len(result.versions) == 1
    (version,) = result.versions
    assert version["origin"] == "ddl"
    assert records(version["changes"]) == expected
    worst = max((r[3] for r in expected), key=_SEVERITY.index, default=None)
    assert version["max_severity"] == worst
    assert version["change_count"] == len(version["changes"])


@pytest.mark.parametrize("migration", list(EXPECTED))
def test_each_migration_rated_at_first_read_and_by_the_client_alike(
    replayed_first_read: tuple[str, dict[str, Replayed]], migration: str
) -> None:
    result = replayed_first_read[1][migration]
    expected = EXPECTED[migration]
    assert result.client_changes is not None
    if expected is None:
        assert result.versions == [] and result.client_changes == []
        return
    (version,) = result.versions
    assert version["diffed_in"] == "database"
    assert records(version["changes"]) == expected
    assert [records(c) for c in result.client_changes] == [expected]
    assert result.refresh["changed"] is False


@pytest.mark.parametrize("migration", list(EXPECTED))
def test_each_version_is_notified_once_with_its_figures(
    replayed: tuple[str, dict[str, Replayed]],
    replayed_first_read: tuple[str, dict[str, Replayed]],
    migration: str,
) -> None:
    at_commit = replayed[1][migration]
    assert at_commit.notified == [
        {
            "version": v["version"], "hash": v["hash"], "origin": "ddl",
            "max_severity": v["max_severity"], "change_count": v["change_count"],
            "rated": True, "diffed_in": v["diffed_in"], "tables": v["tables"],
            "tables_truncated": False,
        }
        for v in at_commit.versions
    ]  # fmt: skip
    lazy = replayed_first_read[1][migration]
    assert lazy.notified is not None
    assert [(n["version"], n["rated"], n["max_severity"]) for n in lazy.notified] == [
        (v["version"], False, None) for v in lazy.versions
    ]


@pytest.mark.parametrize("migration", list(EXPECTED))
def test_refresh_right_after_each_migration_finds_nothing(
    replayed: tuple[str, dict[str, Replayed]], migration: str
) -> None:
    assert replayed[1][migration].refresh["changed"] is False


@pytest.mark.parametrize("migration", list(EXPECTED))
def test_plan_of_each_migration_reports_what_its_commit_records(
    replayed: tuple[str, dict[str, Replayed]], migration: str
) -> None:
    result = replayed[1][migration]
    file = next(f for f in MIGRATIONS if _name(f) == migration)
    if result.exit_code != 0 or not runs_in_one_transaction(file):
        # The migration fails, or cannot run inside plan's transaction.
        assert result.plan.exit_code == 2
        assert result.plan.report["ok"] is False
        assert result.plan.report["error"]["sqlstate"] in ("42P01", "25001", "0A000")
        return
    committed = [c for v in result.versions for c in v["changes"] or []]
    assert records(result.plan.report["changes"]) == records(committed)
    at_or_above_high = any(_SEVERITY.index(c["severity"]) >= 2 for c in committed)
    assert result.plan.exit_code == (1 if at_or_above_high else 0)
    assert result.plan.report["exit_code"] == result.plan.exit_code


def _tool(name: str) -> str:
    from pgresilience.embedded import find_bin_dir

    return str(find_bin_dir() / name)


@pytest.mark.pg_dump
def test_same_schema_built_another_way_hashes_equal(
    replayed: tuple[str, dict[str, Replayed]], server: Any, template_db: str, tmp_path: Path
) -> None:
    """The final schema of the 58 migrations, created again from pg_dump's
    schema-only script (other statements, other order, other OIDs) in another
    database: the same hash."""
    import subprocess

    dsn = replayed[0]
    script = tmp_path / "app.sql"
    subprocess.run(
        [
            _tool("pg_dump"),
            "--schema-only",
            "-n",
            "public",
            "-n",
            "internal",
            "-f",
            str(script),
            dsn,
        ],
        check=True,
    )
    # The new database has its public schema, and pgresilience's rpc()
    # wrappers in it, already (the dump has them too: replaced by the same).
    text = script.read_text().replace("CREATE SCHEMA public;\n", "")
    text = text.replace("CREATE FUNCTION public.", "CREATE OR REPLACE FUNCTION public.")
    script.write_text(text)
    name = "pgr_b5_rebuilt"
    server.drop_database(name)
    other = server.create_database(name, template=template_db)
    try:
        assert psql(other, APP / "platform.sql") == 0
        assert psql(other, MIGRATIONS[0]) == 0  # the extensions
        assert psql(other, script) == 0
        assert refresh(other)["changed"] is False
        assert current_hash(other) == current_hash(dsn)
    finally:
        server.drop_database(name)


@pytest.mark.pg_dump
def test_dump_and_restore_of_the_history_records_nothing_then_only_the_next_migration(
    replayed: tuple[str, dict[str, Replayed]], server: Any, tmp_path: Path
) -> None:
    import subprocess

    dsn = replayed[0]
    archive = tmp_path / "app.dump"
    subprocess.run([_tool("pg_dump"), "-Fc", "-f", str(archive), dsn], check=True)
    name = "pgr_b5_restored"
    server.drop_database(name)
    restored = server.create_database(name)
    try:
        subprocess.run(
            [_tool("pg_restore"), "--exit-on-error", "-d", restored, str(archive)],
            check=True,
            capture_output=True,
        )
        before = last_version(restored)
        assert before == last_version(dsn)
        assert refresh(restored)["changed"] is False
        assert current_hash(restored) == current_hash(dsn)
        migration = tmp_path / "next.sql"
        migration.write_text("alter table public.catalog_items add column sku text;")
        assert psql(restored, migration) == 0
        (version,) = versions_since(restored, before)
        assert records(version["changes"]) == {
            ("column_added", "public.catalog_items", "sku", "low")
        }
    finally:
        server.drop_database(name)


def test_whole_history_squashed_into_one_transaction_hashes_equal(
    replayed: tuple[str, dict[str, Replayed]], server: Any, template_db: str, tmp_path: Path
) -> None:
    """The same 58 migrations as ONE transaction (CONCURRENTLY dropped, the
    failing and rolled-back files left out) fold into one version, with the
    schema hash of the file-by-file replay, and nothing for refresh."""
    parts = []
    for file in MIGRATIONS:
        if EXPECTED[_name(file)] is None and "domains" not in file.name:
            if _name(file) not in ("extensions", "grants_and_comments"):
                continue
        parts.append(file.read_text().replace(" concurrently", ""))
    squashed = tmp_path / "squashed.sql"
    squashed.write_text("\n".join(parts))
    name = "pgr_b5_squashed"
    server.drop_database(name)
    other = server.create_database(name, template=template_db)
    try:
        assert psql(other, APP / "platform.sql") == 0
        before = last_version(other)
        assert psql(other, squashed) == 0
        assert len(versions_since(other, before)) == 1
        assert refresh(other)["changed"] is False
        assert current_hash(other) == current_hash(replayed[0])
    finally:
        server.drop_database(name)
