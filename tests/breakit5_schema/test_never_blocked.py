"""Tracking never blocks a migration (DESIGN.md section 2): a huge one, one
whose fold cannot get its lock in the migration's lock_timeout (an error in
tracking's own work), one run under session_replication_role = replica, one
run by a non-superuser owner. Each runs in its own psql process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.breakit5_schema.conftest import last_version, psql, records, refresh, versions_since

pytestmark = pytest.mark.plpython


def test_huge_migration_is_one_version_naming_every_table(dsn: str, tmp_path: Path) -> None:
    count = 300
    statements = []
    for i in range(count):
        statements += [
            f"create table public.t{i} (id bigint generated always as identity primary key,"
            f" owner uuid, body text, at timestamptz default now());",
            f"create index t{i}_owner_idx on public.t{i} (owner);",
            f"alter table public.t{i} enable row level security;",
            f"create policy p{i} on public.t{i} using (owner = auth_uid());",
        ]
    file = tmp_path / "huge.sql"
    file.write_text(
        "create function public.auth_uid() returns uuid language sql stable"
        " as $$ select null::uuid $$;\n" + "\n".join(statements)
    )
    before = last_version(dsn)
    assert psql(dsn, file) == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {
        ("table_added", f"public.t{i}", None, "low") for i in range(count)
    } | {("function_added", "public.auth_uid()", None, "low")}
    assert refresh(dsn)["changed"] is False


def test_migration_commits_when_its_lock_timeout_stops_the_fold(dsn: str, tmp_path: Path) -> None:
    """squawk and strong_migrations advise a lock_timeout in every migration;
    while another session holds the fold lock, the fold fails on it. The
    migration still commits; schema_refresh() records its change."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table public.accounts (id int primary key)")
    before = last_version(dsn)
    file = tmp_path / "guarded.sql"
    file.write_text(
        "set lock_timeout = '300ms';\nalter table public.accounts add column plan text;\n"
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("select resilience.schema_refresh()")  # holds the fold lock
        assert psql(dsn, file) == 0
        holder.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(
            "select count(*) from pg_attribute"
            " where attrelid = 'public.accounts'::regclass and attname = 'plan'"
        ).fetchone() == (1,)
    assert versions_since(dsn, before) == []
    caught_up = refresh(dsn)
    assert caught_up["changed"] is True
    (version,) = versions_since(dsn, before)
    assert version["origin"] == "refresh"
    assert records(version["changes"]) == {("column_added", "public.accounts", "plan", "low")}


def test_migration_under_replica_role_is_one_version(dsn: str, tmp_path: Path) -> None:
    file = tmp_path / "replica.sql"
    file.write_text("""
        create table public.events (id bigint primary key, kind text not null);
        alter table public.events enable row level security;
        create index events_kind_idx on public.events (kind);
    """)
    before = last_version(dsn)
    assert psql(dsn, file, options="-c session_replication_role=replica") == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {("table_added", "public.events", None, "low")}
    assert refresh(dsn)["changed"] is False


def test_migration_by_non_superuser_owner_is_one_version(
    dsn: str, tmp_path: Path, make_role: Callable[..., str]
) -> None:
    owner_dsn = make_role("b5_schema_owner")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema app authorization b5_schema_owner")
    file = tmp_path / "owner.sql"
    file.write_text("""
        create type app.plan as enum ('free', 'pro');
        create table app.accounts (id bigint generated always as identity primary key,
            plan app.plan not null default 'free', email text not null unique);
        alter table app.accounts enable row level security;
        create policy own on app.accounts using (email = current_user);
        create function app.pro_count() returns bigint language sql stable security definer
            set search_path = '' as $$ select count(*) from app.accounts where plan = 'pro' $$;
        create view app.pro_accounts with (security_invoker = true) as
            select id, email from app.accounts where plan = 'pro';
    """)
    before = last_version(dsn)
    assert psql(owner_dsn, file) == 0
    (version,) = versions_since(dsn, before)
    assert version["actor_role"] == "b5_schema_owner"
    assert records(version["changes"]) == {
        ("enum_added", "app.plan", None, "low"),
        ("table_added", "app.accounts", None, "low"),
        ("function_added", "app.pro_count()", None, "low"),
        ("view_added", "app.pro_accounts", None, "low"),
    }
    rename = tmp_path / "rename.sql"
    rename.write_text("alter table app.accounts rename column email to login;")
    before = last_version(dsn)
    assert psql(owner_dsn, rename) == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {("column_renamed", "app.accounts", "login", "high")}
    assert refresh(dsn)["changed"] is False


def test_plan_by_non_superuser_owner_needs_resilience_user_and_commits_nothing(
    dsn: str, tmp_path: Path, make_role: Callable[..., str]
) -> None:
    """docs/cli.md: plan exits 2 when the preview cannot run (a role without
    pgresilience's grants); a non-superuser in resilience_user plans as any."""
    from tests.breakit5_schema.conftest import plan

    outsider = make_role("b5_plan_outsider")
    member = make_role("b5_plan_member", member_of=("resilience_user",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema app")
        conn.execute("grant usage, create on schema app to b5_plan_outsider, b5_plan_member")
    file = tmp_path / "m.sql"
    file.write_text("create table app.t (id int primary key);")
    before = last_version(dsn)
    refused = plan(outsider, file)
    assert refused.exit_code == 2
    assert refused.report["error"]["sqlstate"] == "42501"
    planned = plan(member, file)
    assert planned.exit_code == 0
    assert records(planned.report["changes"]) == {("table_added", "app.t", None, "low")}
    assert last_version(dsn) == before
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("select to_regclass('app.t')").fetchone() == (None,)
