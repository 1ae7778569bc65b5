"""`pgresilience plan --alembic DIR`: `alembic upgrade head` on the plan's
own connection (the documented "sharing a connection" recipe), rated, rolled
back. Whatever a revision does to end the transaction, nothing is committed:
not the DDL, not the alembic_version row, not a schema version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience import cli

# The recipe of docs/schema_tracking.md: run on config.attributes["connection"].
ENV_PY = """
from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{name}"
down_revision = {down!r}


def upgrade():
{body}
"""


def alembic_dir(tmp_path: Path, *bodies: str, env: str = ENV_PY) -> Path:
    """A script directory whose revisions run ``bodies`` in order."""
    root = tmp_path / "migrations"
    (root / "versions").mkdir(parents=True)
    (root / "env.py").write_text(env)
    down = None
    for i, body in enumerate(bodies):
        name = f"r{i}"
        indented = "\n".join("    " + line for line in body.strip().splitlines())
        (root / "versions" / f"{name}.py").write_text(
            REVISION.format(name=name, down=down, body=indented)
        )
        down = name
    return root


@pytest.fixture
def app(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("create table accounts (id int primary key, email text, note text)")
    conn.execute("create type mood as enum ('ok')")
    return conn


def untouched(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        """
        select (select string_agg(attname, ',' order by attnum) from pg_attribute
                where attrelid = 'accounts'::regclass and attnum > 0 and not attisdropped),
               to_regclass('alembic_version'), to_regclass('made_after'),
               (select count(*) from resilience.schema_versions),
               (select count(*) from resilience.schema_pending),
               (select string_agg(enumlabel, ',') from pg_enum where enumtypid = 'mood'::regtype)
        """
    ).fetchone()
    assert row is not None
    assert row[:3] == ("id,email,note", None, None), row
    return tuple(row)


def plan(dsn: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["plan", "--alembic", str(root), "--dsn", dsn, "--json"])
    return code, json.loads(capsys.readouterr().out)


def rated(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The revisions' changes (Alembic's first run also creates alembic_version,
    and the plan truthfully reports it)."""
    return sorted(
        (c["type"], c["severity"])
        for c in report["changes"]
        if c["table"] != "public.alembic_version"
    )


def test_a_revision_is_rated_and_nothing_stays(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = untouched(app)
    root = alembic_dir(
        tmp_path,
        'op.drop_column("accounts", "note")',
        'op.create_table("made_after", sa.Column("id", sa.Integer))',
    )
    code, report = plan(dsn, root, capsys)
    assert code == 1
    assert rated(report) == [
        ("column_dropped", "critical"),
        ("table_added", "low"),
    ]
    assert untouched(app) == before


COMMITS: dict[str, str] = {
    # The old recipe for ALTER TYPE ... ADD VALUE on PostgreSQL < 12.
    "op.execute COMMIT": 'op.drop_column("accounts", "note")\nop.execute("COMMIT")\n'
    'op.create_table("made_after", sa.Column("id", sa.Integer))',
    "op.execute END": 'op.drop_column("accounts", "note")\nop.execute("  end;")',
    "op.execute ROLLBACK": 'op.execute("ROLLBACK")\nop.drop_column("accounts", "note")',
    "bind.commit()": 'op.drop_column("accounts", "note")\nop.get_bind().commit()',
    "driver commit()": 'op.drop_column("accounts", "note")\n'
    "op.get_bind().connection.driver_connection.commit()",
    "COMMIT among statements": 'op.execute("alter table accounts drop column note; commit")',
    "autocommit_block": 'op.drop_column("accounts", "note")\n'
    "with op.get_context().autocommit_block():\n"
    "    op.execute(\"alter type mood add value 'meh'\")",
}


@pytest.mark.parametrize("body", COMMITS.values(), ids=COMMITS.keys())
def test_a_revision_that_ends_the_transaction_fails_the_plan(
    app: psycopg.Connection[Any],
    dsn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
) -> None:
    before = untouched(app)
    code, report = plan(dsn, alembic_dir(tmp_path, body), capsys)
    assert (code, report["ok"]) == (2, False), report
    assert report["error"]["sqlstate"] == "0A000", report
    assert untouched(app) == before


def test_a_savepoint_in_a_revision_is_fine(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        'op.execute("savepoint s")\nop.drop_column("accounts", "note")\n'
        'op.execute("rollback to savepoint s")\nop.execute("release savepoint s")\n'
        'op.add_column("accounts", sa.Column("nickname", sa.Text))'
    )
    before = untouched(app)
    code, report = plan(dsn, alembic_dir(tmp_path, body), capsys)
    assert code == 0, report
    assert rated(report) == [("column_added", "low")]
    assert untouched(app) == before


def test_an_env_py_opening_its_own_connection_cannot_commit(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = ENV_PY.replace('config.attributes.get("connection")', "None")
    before = untouched(app)
    code, report = plan(
        dsn, alembic_dir(tmp_path, 'op.drop_column("accounts", "note")', env=own), capsys
    )
    assert (code, report["ok"]) == (2, False)
    assert untouched(app) == before


def test_a_failing_revision_exits_2_with_its_sqlstate(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = untouched(app)
    root = alembic_dir(
        tmp_path, 'op.drop_column("accounts", "note")', 'op.drop_column("accounts", "nothing")'
    )
    code, report = plan(dsn, root, capsys)
    assert code == 2
    assert report["error"]["sqlstate"] == "42703"
    assert untouched(app) == before


def test_a_commit_after_set_constraints_all_immediate_is_reported_as_committed(
    app: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented limit: SET CONSTRAINTS ALL IMMEDIATE spends the guard, so
    the driver's own commit() after it does commit; the plan says so."""
    body = (
        'op.execute("set constraints all immediate")\n'
        'op.drop_column("accounts", "note")\n'
        "op.get_bind().connection.driver_connection.commit()"
    )
    code, report = plan(dsn, alembic_dir(tmp_path, body), capsys)
    assert (code, report["error"]["sqlstate"]) == (2, "0A000")
    assert "WAS COMMITTED" in report["error"]["message"]
    columns = app.execute(
        "select string_agg(attname, ',' order by attnum) from pg_attribute"
        " where attrelid = 'accounts'::regclass and attnum > 0 and not attisdropped"
    ).fetchone()
    assert columns == ("id,email",)
