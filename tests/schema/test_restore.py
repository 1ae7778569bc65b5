"""Snapshots survive pg_dump/pg_restore and OID changes (DESIGN.md section 2,
v2): stored OIDs that no longer belong to this catalog are re-keyed by name
before any diff, so a restored database reports only the next migration's
own change, and schema_refresh() right after the restore reports nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgresilience import installer
from pgresilience.embedded import find_bin_dir

from .conftest import Tracker, drop_plpython_diff, summary

Server = Any  # tests/conftest.py: Server

# One object of every tracked kind, with a dropped column (a restore
# renumbers attnums) and a CHECK, an FK, an index, a policy, a view, a
# function and an enum type.
APP_SCHEMA = [
    "create type mood as enum ('sad', 'ok')",
    "create table orgs (id int primary key)",
    "create table users (id int primary key, junk int, email text unique, m mood,"
    " org int references orgs (id), age int check (age > 0))",
    "alter table users drop column junk",
    "create index users_age_idx on users (age)",
    "alter table users enable row level security",
    "create policy own on users using (email = current_user)",
    "create view adults as select id, email from users where age >= 18",
    "create function add(a int, b int) returns int language sql as 'select a + b'",
    # Hostile names: dots, quotes, separators, spaces (the name key must not blur them).
    'create schema "a.b"',
    'create table "a.b"."c ""d""" ("x,y;z" int constraint "k;1,2" check ("x,y;z" > 0))',
    # "a"."b.c" and "a.b"."c" print alike as a.b.c: still two tables.
    'create schema "a"',
    'create table "a"."b.c" (id int constraint same_name check (id > 0))',
    'create table "a.b"."c" (id int constraint same_name check (id > 1))',
    'create index "i ""1""" on "a.b"."c ""d""" ("x,y;z")',
]


def run_tool(name: str, *args: str) -> None:
    """A PostgreSQL client tool of the server's own version (client tools run as root)."""
    subprocess.run([str(find_bin_dir() / name), *args], check=True, capture_output=True)


def tool_args(dsn: str) -> list[str]:
    params = conninfo_to_dict(dsn)
    return ["-h", str(params.get("host") or "127.0.0.1"), "-p", str(params.get("port") or 5432),
            "-U", str(params.get("user") or "postgres")]  # fmt: skip


@pytest.fixture
def restored(server: Server, tmp_path: Path) -> Iterator[Any]:
    """restored(source_dsn) -> dsn of a new database restored from a pg_dump of it."""
    names: list[str] = []

    def restore(source_dsn: str) -> str:
        dump = tmp_path / f"dump{len(names)}"
        run_tool("pg_dump", *tool_args(source_dsn), "-Fc", "-f", str(dump),
                 "-d", str(conninfo_to_dict(source_dsn)["dbname"]))  # fmt: skip
        name = f"pgr_restored_{len(names)}_{tmp_path.name[-8:]}".lower()
        server.drop_database(name)
        target = server.create_database(name)
        names.append(name)
        run_tool("pg_restore", *tool_args(target), "-d", name, str(dump))
        return target

    yield restore
    for name in names:
        server.drop_database(name)


def migrate(conn: psycopg.Connection[Any], *statements: str) -> None:
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL


@pytest.mark.pg_dump
def test_restore_with_the_package_installed_before(tracker: Tracker, restored: Any) -> None:
    tracker.migrate(*APP_SCHEMA)
    source_hash = tracker.hash()
    with psycopg.connect(restored(tracker.conn.info.dsn), autocommit=True) as conn:
        target = Tracker(conn, tracker.mode)
        refreshed = conn.execute("select resilience.schema_refresh()").fetchone()
        assert refreshed is not None
        assert (refreshed[0]["changed"], refreshed[0]["hash"]) == (False, source_hash)
        changes = target.migrate("alter table users add column bio text")
        assert summary(changes) == {("column_added", "public.users", "bio", "low")}
        changes = target.migrate("alter table users alter column org type bigint")
        assert summary(changes) == {("column_type_changed", "public.users", "org", "high")}
        renamed = target.migrate("alter function add(int, int) rename to plus")
        assert summary(renamed) == {("function_renamed", None, None, "high")}


@pytest.mark.pg_dump
def test_restore_then_ddl_before_any_refresh(tracker: Tracker, restored: Any) -> None:
    """The first fold after the restore re-keys: no table_added for an ADD COLUMN."""
    tracker.migrate(*APP_SCHEMA)
    with psycopg.connect(restored(tracker.conn.info.dsn), autocommit=True) as conn:
        target = Tracker(conn, tracker.mode)
        changes = target.migrate("alter table users add column bio text")
        assert summary(changes) == {("column_added", "public.users", "bio", "low")}


@pytest.mark.pg_dump
def test_restore_with_the_package_installed_after(bare_dsn: str, restored: Any, mode: str) -> None:
    with psycopg.connect(bare_dsn, autocommit=True) as source:
        migrate(source, *APP_SCHEMA)
    target_dsn = restored(bare_dsn)
    installer.install(target_dsn)
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        if mode == "client":
            drop_plpython_diff(conn)
        target = Tracker(conn, mode)
        refreshed = conn.execute("select resilience.schema_refresh()->'changed'").fetchone()
        assert refreshed == (False,)
        changes = target.migrate("alter table users add column bio text")
        assert summary(changes) == {("column_added", "public.users", "bio", "low")}


def simulate_new_oids(conn: psycopg.Connection[Any]) -> None:
    """What a restore or pg_upgrade leaves: every stored OID is another one
    (some now name other live objects), in a catalog the snapshot was not
    taken in."""
    for shift in (1_000_000, 7 - 1_000_000):  # two steps: no transient key collision
        conn.execute(
            "update resilience.schema_objects set object_oid = (object_oid::bigint + %(s)s)::oid,"
            " table_oid = (table_oid::bigint + %(s)s)::oid",
            {"s": shift},
        )
        conn.execute(
            "update resilience.schema_groups set group_oid = (group_oid::bigint + %(s)s)::oid",
            {"s": shift},
        )
    # (a database OID alone is a copy in the same cluster, which keeps every OID)
    conn.execute("update resilience.schema_catalog set database_oid = 0, table_oid = 0")


def test_simulated_oid_change_of_every_object_kind(tracker: Tracker) -> None:
    tracker.migrate(*APP_SCHEMA)
    kinds = tracker.conn.execute("select distinct kind from resilience.schema_objects").fetchall()
    assert {k for (k,) in kinds} == {
        "table", "column", "constraint", "index", "policy", "view", "function", "enum"
    }  # fmt: skip
    before = tracker.hash()
    simulate_new_oids(tracker.conn)
    refreshed = tracker.conn.execute("select resilience.schema_refresh()").fetchone()
    assert refreshed is not None
    assert (refreshed[0]["changed"], refreshed[0]["hash"]) == (False, before)
    assert summary(tracker.migrate("alter table users add column bio text")) == {
        ("column_added", "public.users", "bio", "low")
    }
    assert summary(tracker.migrate("alter type mood add value 'happy'")) == {
        ("enum_changed", None, None, "low")
    }


def test_drift_made_before_the_oid_change_is_still_reported(tracker: Tracker) -> None:
    tracker.migrate(*APP_SCHEMA)
    tracker.conn.execute(
        "update resilience.settings set value = 'off' where name = 'schema_tracking'"
    )
    tracker.nothing_recorded("drop view adults", "alter table users drop column age")
    tracker.conn.execute(
        "update resilience.settings set value = 'on' where name = 'schema_tracking'"
    )
    simulate_new_oids(tracker.conn)
    tracker.conn.execute("select resilience.schema_refresh()")
    [version] = tracker.since(tracker.latest() - 1)
    assert summary(version) == {
        ("column_dropped", "public.users", "age", "critical"),
        ("constraint_dropped", "public.users", None, "medium"),  # its CHECK and index went too
        ("index_dropped", "public.users", None, "medium"),
        ("view_dropped", "public.adults", None, "high"),
    }
