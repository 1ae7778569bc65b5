"""pg_dump/pg_restore of a tracked database whose names are hostile (a
schema with a dot and a space, quotes, unicode, overloaded functions, a
partitioned table), restored plainly, with --disable-triggers (DDL under
session_replication_role = replica), and into a database pgresilience is
installed in after the restore: schema_refresh() right after finds
nothing, the next migration reports only its own change."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server
from psycopg.conninfo import conninfo_to_dict

from pgresilience import installer
from pgresilience.embedded import find_bin_dir
from pgresilience.schema import ChangeList

HOSTILE = (
    'create schema "a.b c"',
    'create table "a.b c"."ta""ble ü" (id int primary key, "X" text unique,'
    " v varchar(5) check (length(v) > 1))",
    'create table "a.b c".kid (id int references "a.b c"."ta""ble ü" (id), e int)',
    'create index "i ü" on "a.b c".kid (e)',
    'alter table "a.b c"."ta""ble ü" enable row level security',
    'create policy "p p" on "a.b c"."ta""ble ü" using (id > 0)',
    """create type "a.b c"."En um" as enum ('x', 'y y')""",
    'create function "a.b c".f(a int) returns int language sql as $$ select a $$',
    'create function "a.b c".f(a text) returns text language sql as $$ select a $$',
    'create view "a.b c".vw with (security_invoker = on) as select id from "a.b c"."ta""ble ü"',
    "create table pp (a int) partition by list (a)",
    "create table pp1 partition of pp for values in (1)",
    "create materialized view mv as select 1 as one",
)


def tool(name: str, dsn: str, *args: str) -> None:
    info = conninfo_to_dict(dsn)
    subprocess.run(
        [str(find_bin_dir() / name), "-h", str(info["host"]), "-p", str(info["port"]),
         "-U", str(info["user"]), *args],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def restored(
    server: Server, dsn: str, bare_dsn: str, tmp_path: Any, request: pytest.FixtureRequest
) -> Iterator[str]:
    """request.param: pg_restore's options, or "install after" (the dump is
    of a database without pgresilience, installed once restored)."""
    install_after = request.param == "install after"
    source = bare_dsn if install_after else dsn
    with psycopg.connect(source, autocommit=True) as conn:
        for statement in HOSTILE:
            conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
    dump = str(tmp_path / "tracked.dump")
    tool("pg_dump", source, "-Fc", "-f", dump, str(conninfo_to_dict(source)["dbname"]))
    name = f"pgr_restored_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    try:
        tool("pg_restore", dsn, *(() if install_after else request.param), "-d", name, dump)
        if install_after:
            installer.install(server.dsn(name))
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.mark.pg_dump
@pytest.mark.parametrize(
    "restored",
    [(), ("--disable-triggers",), "install after"],
    indirect=True,
    ids=["plain", "disable-triggers", "install-after"],
)
def test_restore_of_hostile_names_reports_nothing_then_only_the_next_change(restored: str) -> None:
    with psycopg.connect(restored, autocommit=True) as conn:
        row: Any = conn.execute("select resilience.schema_refresh()").fetchone()
        assert row[0]["changed"] is False, row[0]
        before = row[0]["version"]
        conn.execute('alter table "a.b c".kid add column z int')
        rows = conn.execute("select resilience.schema_changes_since(%s)", (before,)).fetchall()
        assert len(rows) == 1
        changes = ChangeList.from_row(rows[0][0])
        assert [(c["type"], c["table"], c["column"]) for c in changes] == [
            ("column_added", "a.b c.kid", "z")
        ]
        row = conn.execute("select resilience.schema_refresh()").fetchone()
        assert row[0]["changed"] is False, row[0]
