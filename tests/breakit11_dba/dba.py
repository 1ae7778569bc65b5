"""Helpers of a DBA's review: migration files run by psql (as a migration
runner does), the versions they leave, and pg_dump as the oracle of what
changed."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import psycopg

from pgresilience.embedded import find_bin_dir

CLI = [sys.executable, "-m", "pgresilience.cli"]


def psql(dsn: str, text: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The file as `psql -v ON_ERROR_STOP=1` runs it: autocommit, except what
    the file itself wraps in BEGIN/COMMIT. Where the server's build has no
    psql (the npm builds of `make test-matrix`), the file goes as one simple
    query, its notices and error as psql would print them."""
    if not (find_bin_dir() / "psql").exists():
        return _simple_query(dsn, text, check=check)
    done = subprocess.run(
        [str(find_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=text,
        text=True,
        capture_output=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"psql failed: {done.stderr}")
    return done


def _simple_query(dsn: str, text: str, *, check: bool) -> subprocess.CompletedProcess[str]:
    notices: list[str] = []
    code = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda n: notices.append(f"{n.severity}:  {n.message_primary}"))
        try:
            conn.execute(text.encode())
        except psycopg.Error as exc:
            if check:
                raise
            notices.append(f"ERROR:  {exc.diag.message_primary}")
            code = 3
    return subprocess.CompletedProcess(["psql"], code, "", "\n".join(notices))


def schema_dump(dsn: str) -> str:
    """pg_dump --schema-only of everything but the package (the oracle)."""
    text = subprocess.run(
        [str(find_bin_dir() / "pg_dump"), "--schema-only", "-N", "resilience", "-d", dsn],
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    return re.sub(r"\\(un)?restrict \S+", "", text)


def last_version(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select version, hash from resilience.schema_versions order by version desc limit 1"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def versions_since(dsn: str, version: int) -> list[dict[str, Any]]:
    """The versions after `version`, rated (by the database, or here by the
    client's copy of the diff where the database has no PL/Python)."""
    from pgresilience.schema.diff import compute_changes

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = [
            r[0] for r in conn.execute("select resilience.schema_changes_since(%s)", (version,))
        ]
    for row in rows:
        if row.get("changes") is None:
            row["changes"] = compute_changes(row.get("deltas") or [])
    return rows


def refresh(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select resilience.schema_refresh()").fetchone()
    assert row is not None
    return row[0]


def migrate(dsn: str, text: str, *, check: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """Runs a migration file; returns the versions it recorded and whether
    pg_dump saw the schema change."""
    before, dump_before = last_version(dsn)[0], schema_dump(dsn)
    psql(dsn, text, check=check)
    return versions_since(dsn, before), schema_dump(dsn) != dump_before


def changes(versions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["type"], c["severity"]) for v in versions for c in v["changes"]]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], text=True, capture_output=True, check=False)
