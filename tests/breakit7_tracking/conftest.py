"""Helpers of the schema tracking exactness review (docs/schema_tracking.md).

Three oracles, none of which needs to know how tracking works:

* incremental == full re-read: after any history, ``schema_refresh()``
  records nothing (``refresh_finds_nothing``);
* path independence: the same schema built by one script in a fresh
  database has the same hash (``rebuilt_hash``: pg_dump of the tracked
  schemas, restored in one transaction);
* net effect: one migration reports its net difference only.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgresilience.embedded import find_bin_dir

Statement = str | sql.Composable


@pytest.fixture
def fresh_db(server: Any, template_db: str) -> Iterator[Callable[..., str]]:
    """fresh_db(template=None) -> conninfo of a new database with pgresilience
    installed, or a copy of `template` (a database name); dropped at the end
    of the test. Cheap enough to call per example."""
    names: list[str] = []

    def make(template: str | None = None) -> str:
        name = f"pgr_bk7_{uuid.uuid4().hex[:10]}"
        server.create_database(name, template=template or template_db)
        names.append(name)
        return str(server.dsn(name))

    yield make
    for name in names:
        server.drop_database(name)


def database_with(server: Any, template_db: str, *statements: Statement) -> Iterator[str]:
    """For a module-scoped fixture: the NAME of a database with pgresilience
    installed and the statements migrated (one version), to copy per test
    (fresh_db(template=name)) rather than migrate again."""
    name = f"pgr_bk7_{uuid.uuid4().hex[:10]}"
    server.create_database(name, template=template_db)
    try:
        migrate(str(server.dsn(name)), *statements)
        yield name
    finally:
        server.drop_database(name)


def migrate(dsn: str, *statements: Statement) -> None:
    """Runs the statements as ONE migration (one transaction)."""
    with psycopg.connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def last_version(dsn: str) -> dict[str, Any]:
    """The newest version row: version, hash, change_count, changes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select version, hash, change_count, changes from resilience.schema_versions"
            " order by version desc limit 1"
        ).fetchone()
    assert row is not None
    return {"version": row[0], "hash": row[1], "change_count": row[2], "changes": row[3]}


def changes_of(dsn: str, version: int) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select x from resilience.schema_changes_since(%s) as x", (version - 1,)
        ).fetchall()
    assert rows and rows[0][0]["version"] == version
    return list(rows[0][0]["changes"] or [])


def refresh_finds_nothing(dsn: str) -> list[tuple[Any, ...]]:
    """Runs schema_refresh(); returns what it recorded (empty: nothing left)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = conn.execute("select resilience.schema_refresh()").fetchone()
    assert result is not None
    if not result[0]["changed"]:
        return []
    return [
        (c["type"], c["table"], c["object"], c.get("column"), c["old_value"], c["new_value"])
        for c in changes_of(dsn, result[0]["version"])
    ]


def summary(changes: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(type, rule, severity, table, object, column) of each change, sorted."""
    return sorted(
        (c["type"], c.get("rule"), c["severity"], c["table"], c["object"], c.get("column"))
        for c in changes
    )


def assert_no_duplicate_records(changes: Sequence[dict[str, Any]]) -> None:
    keys = [(c["type"], c["table"], c["object"], c.get("column")) for c in changes]
    assert len(keys) == len(set(keys)), changes


def dump_schemas(dsn: str, schemas: Sequence[str]) -> str:
    """pg_dump --schema-only of the named schemas, as one SQL script (psql's
    backslash lines left out)."""
    params = conninfo_to_dict(dsn)
    args = [str(find_bin_dir() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges"]
    args += ["--no-comments", "-h", str(params["host"]), "-p", str(params["port"])]
    args += ["-U", str(params.get("user") or "postgres")]
    for schema in schemas:
        # a pattern: the name in double quotes, its own quotes doubled
        args += ["-n", '"' + schema.replace('"', '""') + '"']
    args.append(str(params["dbname"]))
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("\\"))


def tracked_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select nspname from pg_namespace where nspname <> all(%s)"
            " and nspname not like 'pg\\_%%' and nspname <> 'information_schema'"
            " and nspname::text = any(resilience._schema_tracked_names())",
            (["public"],),
        ).fetchall()
    return [r[0] for r in rows]


def rebuilt_hash(dsn: str, fresh: str) -> str:
    """The hash of `fresh` (an empty database) after building there, in ONE
    script, the schemas `dsn` holds (public aside: it holds our wrappers)."""
    script = dump_schemas(dsn, tracked_schemas(dsn))
    with psycopg.connect(fresh) as conn:
        conn.execute(script)  # type: ignore[arg-type]
        conn.commit()
    return str(last_version(fresh)["hash"])
