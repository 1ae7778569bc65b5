"""README "As a database owner that is not superuser": everything but
PL/Python and event triggers installs. The owner's own CLI then says plainly
that changes appear only after schema_refresh(), rates every change in the
client, and `plan` still gates its migrations."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgresilience import cli, installer

ONLY_AFTER_REFRESH = "appear ONLY after resilience.schema_refresh()"


@pytest.fixture
def owner_dsn(server: Any, make_role: Callable[..., str], dsn: str) -> Iterator[str]:
    make_role("b8_db_owner")
    name = f"pgr_b8_owned_{uuid.uuid4().hex[:10]}"
    server.create_database(name, owner="b8_db_owner")
    try:
        owner = server.dsn(name, user="b8_db_owner")
        report = installer.install(owner)
        assert not report.event_triggers
        yield owner
    finally:
        server.drop_database(name)


def test_the_owner_is_told_to_refresh_and_every_change_is_rated(
    owner_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli.main(["status", "--dsn", owner_dsn]) == 0
    out = capsys.readouterr().out
    assert ONLY_AFTER_REFRESH in out
    assert "no PL/Python diff here: the client computes each version's changes" in out
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("create table notes (id int primary key, body text)")
        conn.execute("select resilience.schema_refresh()")
        conn.execute("alter table notes drop column body")
        conn.execute("select resilience.schema_refresh()")
    capsys.readouterr()
    cli.main(["status", "--dsn", owner_dsn])
    out = capsys.readouterr().out
    assert "last change: 1 change(s), max severity critical, tables public.notes" in out


def test_the_owner_plans_a_migration(
    owner_dsn: str, run_plan: Callable[..., tuple[int, str, str]]
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("create table notes (id int primary key, body text)")
        conn.execute("select resilience.schema_refresh()")
        versions = conn.execute("select count(*) from resilience.schema_versions").fetchone()
    code, out, _ = run_plan(owner_dsn, "alter table notes drop column body;", "--json")
    assert code == 1
    report = json.loads(out)
    assert [(c["type"], c["severity"]) for c in report["changes"]] == [
        ("column_dropped", "critical")
    ]
    code, out, _ = run_plan(owner_dsn, "alter table notes add column tag text;")
    assert code == 0, out
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        assert (
            conn.execute("select count(*) from resilience.schema_versions").fetchone() == versions
        )
        columns = conn.execute(
            "select string_agg(attname, ',' order by attnum) from pg_attribute"
            " where attrelid = 'notes'::regclass and attnum > 0 and not attisdropped"
        ).fetchone()
        assert columns == ("id,body",)
