"""The command as documented in docs/cli.md: exit codes, `install` and
`uninstall` by a database owner that is not superuser (README "As a database
owner that is not superuser"), and `plan` on odd migration files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Server

from .conftest import Bouncer, psql_binary
from catalog import catalog_listing

Conn = psycopg.Connection[Any]

PLAN_OK, PLAN_AT_OR_ABOVE, PLAN_FAILED = 0, 1, 2
USAGE, CONNECTION, PERMISSION, NOT_INSTALLED, REFUSED = 2, 3, 4, 5, 6
# Hang guards, not timing asserts: a CLI process starts in 1-4 s on a loaded
# 2-core machine, and a test runs up to six of them.
CALL_HANG = 60
HANG = 240


def cli(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", *args],
        capture_output=True,
        text=True,
        timeout=CALL_HANG,
        env=env,
    )


@pytest.fixture
def owned_db(server: Server, make_role: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """(owner dsn, outsider dsn) of a fresh empty database owned by a login
    role that is neither superuser nor CREATEROLE."""
    make_role("breakit3_owner")
    make_role("breakit3_outsider")
    name = f"pgr_b3_{uuid.uuid4().hex[:10]}"
    server.create_database(name, owner="breakit3_owner")
    try:
        yield server.dsn(name, user="breakit3_owner"), server.dsn(name, user="breakit3_outsider")
    finally:
        server.drop_database(name)


@pytest.mark.timeout(HANG)
def test_owner_install_status_uninstall_round_trip(owned_db: tuple[str, str]) -> None:
    """An owner installs (0, warnings say what is left), `status` exits 0 with
    a [to do] section, `uninstall` refuses while a logical transaction is
    active (6), an outsider gets 4, `--force` undoes the transaction's write
    and removes exactly what install created; then `status` exits 5 and a
    second `uninstall` is a no-op (0)."""
    owner, outsider = owned_db
    before = catalog_listing(owner)
    assert cli("install", "--dsn", outsider).returncode == PERMISSION
    done = cli("install", "--dsn", owner)
    assert done.returncode == 0, done.stderr
    status = cli("status", "--dsn", owner)
    assert status.returncode == 0
    assert "[to do]" in status.stdout
    assert cli("status", "--dsn", outsider).returncode == PERMISSION
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(
            "create table acc (id int primary key, b int); insert into acc values (1, 1);"
            "select resilience.manage_table('acc')"
        )
        [(tx,)] = conn.execute("select resilience.tx_begin()").fetchall()
        conn.execute(
            "select resilience.tx_execute(%s, 'acc', 'update', '{\"b\": 2}', '{\"id\": 1}')", (tx,)
        )
    assert cli("uninstall", "--dsn", owner).returncode == REFUSED
    assert cli("uninstall", "--dsn", outsider, "--force").returncode == PERMISSION
    assert cli("uninstall", "--dsn", owner, "--force").returncode == 0
    with psycopg.connect(owner, autocommit=True) as conn:
        assert conn.execute("select b from acc").fetchall() == [(1,)]
        conn.execute("drop table acc")
    assert catalog_listing(owner) == before
    assert cli("status", "--dsn", owner).returncode == NOT_INSTALLED
    assert cli("uninstall", "--dsn", owner).returncode == 0


@pytest.mark.timeout(HANG)
def test_status_exit_codes(bare_dsn: str, server: Server) -> None:
    assert cli("status", "--dsn", bare_dsn).returncode == NOT_INSTALLED
    assert cli("status").returncode == USAGE  # no --dsn, no DATABASE_URL
    assert cli("status", database_url=bare_dsn).returncode == NOT_INSTALLED
    assert (
        cli("status", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2").returncode == CONNECTION
    )
    unknown_db = server.dsn(f"pgr_nope_{uuid.uuid4().hex[:8]}")
    assert cli("status", "--dsn", unknown_db).returncode == CONNECTION
    assert cli("status", "--dsn", bare_dsn, "--bogus").returncode == USAGE


def plan(dsn: str, tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    migration = tmp_path / "migration.sql"
    migration.write_text(text, encoding="utf-8")
    return cli("plan", "--dsn", dsn, str(migration), *extra)


def tables(conn: Conn) -> list[str]:
    rows = conn.execute(
        "select relname from pg_class where relnamespace = 'public'::regnamespace"
        " and relkind = 'r' order by 1"
    ).fetchall()
    return [r for (r,) in rows]


def schema_version(conn: Conn) -> int:
    [(current,)] = conn.execute("select resilience.schema_current()").fetchall()
    return int(current["version"])


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", PLAN_OK),
        ("-- only a comment\n/* and another */\n", PLAN_OK),
        ("create table p1 (id int primary key);", PLAN_OK),
        ("drop table kept;", PLAN_AT_OR_ABOVE),
        # The whole file already one transaction (psql -f, sqitch, Django's sqlmigrate):
        ("-- deploy\nBEGIN;\ncreate table p2 (id int);\nCOMMIT;\n", PLAN_OK),
        ("/* migration 42 */\nBEGIN;\ncreate table p3 (id int);\nCOMMIT;\n", PLAN_OK),
        ("begin transaction;\ndrop table kept;\nend;\n-- done\n", PLAN_AT_OR_ABOVE),
        # Transaction control inside must not commit anything for real:
        ("create table p4 (id int);\ncommit;\ncreate table p5 (id int);", PLAN_FAILED),
        ("create table p6 (id int);\nrollback;\ndrop table kept;", PLAN_FAILED),
        ("do $$ begin create table p7 (id int); commit; end $$;", PLAN_FAILED),
        ("savepoint s;\ncreate table p8 (id int);\nrelease savepoint s;", PLAN_FAILED),
        ("create index concurrently on kept (id);", PLAN_FAILED),
        ("vacuum kept;", PLAN_FAILED),
        ("create table p9 (id int);\nselect 1/0;", PLAN_FAILED),
    ],
)
def test_plan_on_odd_migrations(conn: Conn, dsn: str, tmp_path: Path, text: str, code: int) -> None:
    """docs/cli.md `plan`: 0 below --fail-on, 1 at or above, 2 when the
    migration fails; whatever the file holds, nothing stays behind (no
    table, no schema version)."""
    conn.execute("create table kept (id int primary key)")
    conn.execute("select resilience.schema_refresh()")
    tables_before, version_before = tables(conn), schema_version(conn)
    done = plan(dsn, tmp_path, text)
    assert done.returncode == code, done.stdout + done.stderr
    assert tables(conn) == tables_before
    assert schema_version(conn) == version_before


@pytest.mark.timeout(HANG)
def test_plan_without_a_readable_file_is_a_usage_error(dsn: str, tmp_path: Path) -> None:
    """A missing or undecodable file is a usage error (2), never plan's 1,
    which tells CI that the migration reached --fail-on."""
    missing = cli("plan", "--dsn", dsn, str(tmp_path / "missing.sql"))
    assert missing.returncode == USAGE, missing.stderr
    latin1 = tmp_path / "latin1.sql"
    latin1.write_bytes("create table caf\xe9 (id int);".encode("latin-1"))
    undecodable = cli("plan", "--dsn", dsn, str(latin1))
    assert undecodable.returncode == USAGE, undecodable.stderr


@pytest.mark.timeout(HANG)
def test_install_warnings_and_status_to_do_name_the_same_grants(
    owned_db: tuple[str, str],
) -> None:
    """README "As a database owner that is not superuser": whatever is left,
    the installer's warnings and `status` ([to do]) list as exact commands.
    Here (a superuser installed on this server before) every role membership
    already exists: neither may ask a superuser for one. (Before the fix,
    install warned about all four, and status never listed any.)"""
    owner, _ = owned_db
    install = cli("install", "--dsn", owner)
    assert install.returncode == 0, install.stderr
    status = cli("status", "--dsn", owner)
    to_do = status.stdout.split("[to do]", 1)[1]
    assert "grant resilience_" not in install.stdout
    assert "grant resilience_" not in to_do


@pytest.mark.timeout(HANG)
def test_a_missing_membership_is_asked_for_by_install_and_status_alike(
    owned_db: tuple[str, str], server: Server
) -> None:
    """One membership missing (authenticated not in resilience_user, which an
    owner without the ADMIN option cannot grant): install's warnings and
    status's [to do] give the same exact command for a superuser, and once a
    superuser ran it, neither asks again."""
    owner, _ = owned_db
    grant = "grant resilience_user to authenticated;"
    with server.admin() as admin:
        admin.execute("revoke resilience_user from authenticated")
    try:
        install = cli("install", "--dsn", owner)
        assert install.returncode == 0, install.stderr
        status = cli("status", "--dsn", owner)
        to_do = status.stdout.split("[to do]", 1)[1]
        assert grant in install.stdout
        assert grant in to_do
        with server.admin() as admin:
            admin.execute(grant)
        assert grant not in cli("status", "--dsn", owner).stdout
        assert grant not in cli("install", "--dsn", owner).stdout
    finally:
        with server.admin() as admin:
            admin.execute(grant)


@pytest.mark.timeout(HANG)
def test_print_sql_as_a_migration_run_by_the_owner(
    server: Server, make_role: Callable[..., str], tmp_path: Path
) -> None:
    """README "On Supabase": the printed script, run as a migration by a
    database owner that is not superuser (psql --single-transaction), does
    what `install` does for that target, and applying it again (the next
    release's migration) upgrades in place."""
    make_role("breakit3_owner")
    names = [f"pgr_b3_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        server.create_database(name, owner="breakit3_owner")
    try:
        migrated, installed = (server.dsn(name, user="breakit3_owner") for name in names)
        printed = cli("install", "--print-sql", "--no-plpython", "--no-event-triggers")
        assert printed.returncode == 0, printed.stderr
        script = tmp_path / "20261130000000_pgresilience.sql"
        script.write_text(printed.stdout, encoding="utf-8")
        psql = [psql_binary(), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1"]
        for _ in range(2):
            applied = subprocess.run(
                [*psql, "-d", migrated, "-f", str(script)],
                capture_output=True,
                text=True,
                timeout=CALL_HANG,
            )
            assert applied.returncode == 0, applied.stderr
        done = cli("install", "--dsn", installed, "--no-plpython", "--no-event-triggers")
        assert done.returncode == 0, done.stderr
        assert catalog_listing(migrated) == catalog_listing(installed)
        assert cli("status", "--dsn", migrated).returncode == 0
    finally:
        for name in names:
            server.drop_database(name)


@pytest.mark.timeout(HANG)
def test_install_status_plan_uninstall_through_the_pooler(
    bare_dsn: str, bouncer: Bouncer, tmp_path: Path
) -> None:
    """README "Which URL for what": install, uninstall and status work through
    a transaction pooler (and so does plan: its migration is one transaction);
    afterwards no server connection holds a prepared statement of ours."""
    pooled = bouncer.dsn(bare_dsn)
    done = cli("install", "--dsn", pooled)
    assert done.returncode == 0, done.stderr
    assert cli("status", "--dsn", pooled).returncode == 0
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute("create table kept (id int primary key)")
    drop = plan(pooled, tmp_path, "drop table kept;")
    assert drop.returncode == PLAN_AT_OR_ABOVE, drop.stdout + drop.stderr
    assert cli("uninstall", "--dsn", pooled).returncode == 0
    assert cli("status", "--dsn", pooled).returncode == NOT_INSTALLED
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as probe:
        for _ in range(8):  # whichever server connection answers
            assert probe.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)


@pytest.mark.timeout(HANG)
def test_watch_through_the_pooler(dsn: str, conn: Conn, bouncer: Bouncer) -> None:
    """README "Which URL for what": `pgresilience watch` given a transaction
    pooler notices it and polls: a migration committed elsewhere is printed;
    Ctrl-C ends it with exit 0."""
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "pgresilience.cli", "watch", "--dsn", bouncer.dsn(dsn)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    seen = threading.Event()
    started = threading.Event()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line)
            if line.startswith("watching"):
                started.set()
            if "watched_table" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(10), lines
        threading.Event().wait(1.0)  # its first poll has read the current version
        conn.execute("create table watched_table (id int primary key)")
        assert seen.wait(10), lines
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)


@pytest.mark.timeout(HANG)
def test_uninstall_force_when_a_rollback_cannot_restore(dsn: str, conn: Conn) -> None:
    """`uninstall --force` rolls active logical transactions back first. One
    that cannot be restored (its deleted row's e-mail was taken meanwhile:
    RZ005, which force cannot override) stops it: exit 1, nothing removed,
    the transaction still active; once the blocker is gone, it goes through."""
    conn.execute(
        "create table members (id int primary key, email text unique);"
        "insert into members values (1, 'a@example.com');"
        "select resilience.manage_table('members')"
    )
    [(tx,)] = conn.execute("select resilience.tx_begin()").fetchall()
    conn.execute(
        "select resilience.tx_execute(%s, 'members', 'delete', null, '{\"id\": 1}')", (tx,)
    )
    conn.execute("insert into members values (2, 'a@example.com')")
    stopped = cli("uninstall", "--dsn", dsn, "--force")
    assert stopped.returncode == 1, stopped.stderr
    assert cli("status", "--dsn", dsn).returncode == 0
    [(status,)] = conn.execute("select resilience.tx_status(%s) ->> 'status'", (tx,)).fetchall()
    assert status == "active"
    conn.execute("delete from members where id = 2")
    assert cli("uninstall", "--dsn", dsn, "--force").returncode == 0
    assert conn.execute("select * from members").fetchall() == [(1, "a@example.com")]


ALEMBIC_ENV = """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""

ALEMBIC_AUTOCOMMIT_REVISION = """
from alembic import op

revision = "b3a1"
down_revision = None


def upgrade():
    op.execute("create table planned_a (id int primary key, x int)")
    # Alembic commits the transaction before such a block: not in a plan.
    with op.get_context().autocommit_block():
        op.execute("create index concurrently planned_a_x on planned_a (x)")
    op.execute("create table planned_b (id int)")
"""


@pytest.mark.timeout(HANG)
def test_plan_alembic_with_an_autocommit_block_commits_nothing(
    dsn: str, conn: Conn, tmp_path: Path
) -> None:
    """Alembic's autocommit_block() commits the transaction before it (its
    documented behaviour, for CREATE INDEX CONCURRENTLY and the like). Under
    `plan --alembic` that would make part of the migration real: the plan
    must fail instead (2) and leave nothing behind."""
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ALEMBIC_ENV, encoding="utf-8")
    (scripts / "versions" / "b3a1.py").write_text(ALEMBIC_AUTOCOMMIT_REVISION, encoding="utf-8")
    done = cli("plan", "--alembic", "--dsn", dsn, str(scripts))
    assert done.returncode == PLAN_FAILED, done.stdout + done.stderr
    assert tables(conn) == []  # no planned_a, planned_b nor public.alembic_version
