"""Documentation snippets copy-pasted exactly as written, and checked to do
what the text around them says (README.md "Quickstart", docs/breakers.md,
docs/batch_and_security.md "the examples on this page run as written, in
this order")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import psql_binary

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)

Conn = psycopg.Connection[Any]


def blocks(page: str, info: str) -> list[str]:
    """The fenced blocks of ``page`` whose info string is exactly ``info``."""
    text = (ROOT / page).read_text(encoding="utf-8")
    return [body for tag, body in FENCE.findall(text) if tag.strip() == info]


def run_python(code: str, dsn: str | None, tmp_path: Path) -> list[str]:
    """Runs a snippet as a script, as a reader would (DATABASE_URL set)."""
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=18,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def run_psql(code: str, dsn: str, tmp_path: Path) -> str:
    script = tmp_path / "snippet.sql"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [
            psql_binary(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            dsn,
            "-f",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=18,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(60)
def test_readme_quickstart_python(conn: Conn, dsn: str, tmp_path: Path) -> None:
    """README "Quickstart": the tables, then "From Python (psycopg)": the
    other writer meets the claim (55P03), the rollback makes the name John
    again, the batch inserts Jane with her profile."""
    [tables] = blocks("README.md", "sql")[:1]
    conn.execute(tables)
    python = blocks("README.md", "python")[0]
    assert "ClaimConflict" in python
    out = run_python(python, dsn, tmp_path)
    assert out[0].startswith("claimed: 55P03 {")
    assert out[1].startswith("True [[{")
    rows = conn.execute(
        "select u.name, p.bio from users u join profiles p on p.user_id = u.id order by u.id"
    ).fetchall()
    assert rows == [("John", "hello"), ("Jane", "hi")]
    states = conn.execute(
        "select status from resilience.transactions order by started_at"
    ).fetchall()
    assert [s for (s,) in states] == ["committed", "rolled_back", "rolled_back"]


@pytest.mark.timeout(60)
def test_readme_quickstart_sql(conn: Conn, dsn: str, tmp_path: Path) -> None:
    """README "From SQL" in psql after the Quickstart tables: John's insert
    rolled back (LIFO, all or nothing), Jane and her profile from tx_run."""
    tables, from_sql = blocks("README.md", "sql")[:2]
    assert r"\gset" in from_sql
    run_psql(tables + "\n" + from_sql, dsn, tmp_path)
    rows = conn.execute(
        "select u.name, p.bio from users u left join profiles p on p.user_id = u.id"
    ).fetchall()
    assert rows == [("Jane", "hi")]


@pytest.mark.timeout(60)
def test_readme_schema_versions_and_breakers(conn: Conn, dsn: str, tmp_path: Path) -> None:
    python = blocks("README.md", "python")[1]
    out = run_python(python, dsn, tmp_path)
    assert out[1] == "answer"
    health = out[2]
    assert "'ai-api'" in health and "'healthy': True" in health


@pytest.mark.timeout(60)
def test_breakers_guide_snippets(dsn: str, tmp_path: Path) -> None:
    """docs/breakers.md: the local example, then the shared-state example."""
    local, shared = blocks("docs/breakers.md", "python")
    out = run_python(local, None, tmp_path)
    assert out[0].startswith("answer to hello")
    assert "gemini-api" in out[-1]
    out = run_python(shared, dsn, tmp_path)
    assert out[0].startswith("True {")
    assert "'shared_store': 'available'" in out[0]


@pytest.mark.timeout(60)
def test_batch_guide_snippets_in_order(conn: Conn, dsn: str, tmp_path: Path) -> None:
    """docs/batch_and_security.md: the tables, the tx_run whose result the
    page prints in a comment, then the Python batch."""
    tables, batch = blocks("docs/batch_and_security.md", "sql")
    conn.execute(tables)
    [(result,)] = conn.execute(batch).fetchall()
    printed = "\n".join(
        line.removeprefix("--").strip() for line in batch.splitlines() if line.startswith("--")
    )
    assert result == json.loads(printed)
    [python] = blocks("docs/batch_and_security.md", "python")
    out = run_python(python, dsn, tmp_path)
    assert out == ["True [{'id': 2, 'name': 'Jane'}] 1 None"]
