"""Fixtures of the schema-tracking review (plan, preview, watch, status, severities)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgresilience import cli


@pytest.fixture(params=["at_commit", "first_read"])
def diff_mode(request: pytest.FixtureRequest) -> str:
    """Both places the database diffs: at commit (setting schema_diff_at_commit
    on, the default) and at the first read (off)."""
    return str(request.param)


def set_diff_mode(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "update resilience.settings set value = %s where name = 'schema_diff_at_commit'",
            ("on" if mode == "at_commit" else "off",),
        )


@pytest.fixture
def run_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """run_plan(dsn, text_or_bytes, *options) -> (exit code, stdout, stderr), as
    `pgresilience plan FILE --dsn DSN *options` run by CI."""

    def run(dsn: str, migration: str | bytes, *options: str) -> tuple[int, str, str]:
        path = tmp_path / f"migration_{uuid.uuid4().hex[:8]}.sql"
        if isinstance(migration, bytes):
            path.write_bytes(migration)
        else:
            path.write_text(migration, encoding="utf-8")
        capsys.readouterr()
        code = cli.main(["plan", str(path), "--dsn", dsn, *options])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def fresh_database(server: Any, template_db: str) -> Iterator[str]:
    """A new database with pgresilience installed (a copy of the template)."""
    name = f"pgr_b8_{uuid.uuid4().hex[:12]}"
    server.create_database(name, template=template_db)
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)
