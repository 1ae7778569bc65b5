"""Every function an untrusted role may execute, after tables are managed
(the generated per-table functions included): a closed list, so that a new
SECURITY DEFINER helper granted by accident shows up here. For each, the
hostile calls live in the other files of this directory and tests/security."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

# Names (generated ones with their table number as <n>) a role may execute in
# schema resilience, and in the exposed schema (public).
TRANSACTION_API = {
    "tx_begin", "tx_execute", "tx_savepoint", "tx_rollback_to", "tx_commit", "tx_rollback",
    "tx_status", "tx_active", "tx_reap", "tx_pre_request", "tx_run", "tx_images",
    "manage_table", "unmanage_table", "circuit_health",
}  # fmt: skip
# SECURITY INVOKER steps of tx_execute and tx_run (they run as the caller),
# the caller helpers RLS policies call, and the one definer step of
# tx_execute (_execute_prepare: checks the caller owns the transaction).
INTERNAL_STEPS = {
    "_caller_role", "_caller_sub", "_is_admin", "_resolve_table", "_execute_prepare",
    "_descriptor", "_describe", "_has_equality", "_equality_operator", "_returning_sql",
    "_execute_sql",
    "_match_sql", "_match_definition", "_base_type", "_require_columns", "_record_definition",
    "_insert_row_sql", "_insert_row_<n>",
    "_batch_ref",
    "_batch_resolve_row", "_batch_resolve", "_batch_check", "_lock_<n>", "_lock_by_key_<n>",
}  # fmt: skip
SERVER_ONLY = {
    "schema_current", "schema_refresh", "schema_preview", "schema_history",
    "schema_changes_since", "_circuit_publish", "_circuit_probe", "_circuit_get",
}  # fmt: skip

EXPECTED = {
    "anon": (set(), set()),
    "authenticated": (TRANSACTION_API | INTERNAL_STEPS, TRANSACTION_API),
    "service_role": (
        TRANSACTION_API | INTERNAL_STEPS | SERVER_ONLY,
        TRANSACTION_API | {n for n in SERVER_ONLY if not n.startswith("_")},
    ),
}


def _executable(conn: psycopg.Connection[Any], role: str, schema: str) -> set[str]:
    rows = conn.execute(
        "select p.proname from pg_proc as p where p.pronamespace = %s::regnamespace"
        " and has_function_privilege(%s, p.oid, 'execute')",
        (schema, role),
    ).fetchall()
    return {re.sub(r"_[0-9]+_*$", "_<n>", name) for (name,) in rows}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_callable_surface_is_closed(app: psycopg.Connection[Any], role: str) -> None:
    app.execute(
        "create table public.parted (id integer, k text, primary key (id, k))"
        " partition by list (k);"
        " create table public.parted_a partition of public.parted for values in ('a');"
        " select resilience.manage_table('public.parted')"
    )
    in_resilience, exposed = EXPECTED[role]
    assert _executable(app, role, "resilience") == in_resilience
    public = _executable(app, role, "public")
    assert public == exposed
    # Nothing of ours is SECURITY DEFINER without its search_path pinned,
    # generated functions included.
    unpinned = app.execute(
        "select p.oid::regprocedure::text from pg_proc as p"
        " where p.pronamespace = 'resilience'::regnamespace and p.prosecdef"
        " and not coalesce('search_path=\"\"' = any (p.proconfig), false)"
    ).fetchall()
    assert unpinned == []
