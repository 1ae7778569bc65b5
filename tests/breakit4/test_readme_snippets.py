"""The README's quickstart, copy-pasted: its SQL block creates and manages
the tables, its Python block runs as written (DATABASE_URL set), and the
promises its comments make hold afterwards."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_quickstart_runs_as_written(
    conn: psycopg.Connection[Any], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = next(b for b in _blocks("sql") if "manage_table('users')" in b)
    conn.execute(setup)  # the README's own SQL (a trusted file of this repo)
    python = next(b for b in _blocks("python") if "ClaimConflict" in b)
    monkeypatch.setenv("DATABASE_URL", dsn)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(python, "README.md", "exec"), {})  # noqa: S102 - the README's snippet
    output = printed.getvalue()
    assert "claimed: 55P03" in output  # the other writer met the claim
    assert output.splitlines()[-1].startswith("True ")  # print(batch.success, batch.data)
    names = [r[0] for r in conn.execute("select name from users order by id").fetchall()]
    assert names == ["John", "Jane"]  # "the name is John again"; the batch committed
    assert conn.execute("select count(*) from profiles").fetchone() == (2,)
    active = "select count(*) from resilience.transactions where status = 'active'"
    assert conn.execute(active).fetchone() == (0,)
