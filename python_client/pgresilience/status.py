"""`pgresilience status`: what is installed in a database, section by section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgresilience import __version__
from pgresilience._resources import data_path
from pgresilience.advice import follow_ups
from pgresilience.installer import installed_revision
from pgresilience.queries import query

__all__ = ["status_lines", "head_revision"]

Section = Callable[[psycopg.Connection[Any]], list[str]]


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(data_path("alembic")))
    return ScriptDirectory.from_config(config).get_current_head()


def _feature_sections() -> list[tuple[str, Section]]:
    # Imported here: each feature's module pulls in its own dependencies.
    from pgresilience.breakers.status import status_lines as circuits
    from pgresilience.schema.status import status_lines as schema
    from pgresilience.transactions.status import status_lines as transactions

    return [
        ("logical transactions", transactions),
        ("schema versions", schema),
        ("circuits", circuits),
    ]


def _installation(conn: psycopg.Connection[Any], revision: str) -> list[str]:
    row = conn.execute(query("status_installation")).fetchone()
    assert row is not None
    functions, tables, wrappers, wrapper_schemas, plpython, event_triggers, roles = row
    head = head_revision()
    upgrade = "" if revision == head else f" (upgrade available: {head})"
    lines = [
        f"installed: revision {revision}{upgrade}",
        f"schema resilience: {tables} tables, {functions} functions",
        f"exposed wrappers: {wrappers}"
        + (f" in schema {', '.join(wrapper_schemas)}" if wrapper_schemas else " (none)"),
        "PL/Python: "
        + (
            "installed (schema diff runs in the database)"
            if plpython
            else "not installed (schema diff computed by the Python client)"
        ),
        "event triggers: "
        + (
            f"{event_triggers} (DDL tracked at commit)"
            if event_triggers
            else "none (DDL tracking falls back to resilience.schema_refresh())"
        ),
        f"roles: {', '.join(roles) if roles else 'missing (only the owner can use the API)'}",
    ]
    return lines


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """The status report; ``conn`` is an autocommit connection."""
    info = conn.info
    lines = [f"pgresilience {__version__} · database {info.dbname} on {info.host}:{info.port}"]
    revision = installed_revision(conn)
    if revision is None:
        return lines + ["not installed (run: pgresilience install)"]
    lines += _installation(conn, revision)
    for title, section in _feature_sections():
        lines += ["", f"[{title}]"] + [f"  {line}" for line in section(conn)]
    todo = follow_ups(conn)
    if todo:
        lines += ["", "[to do]"] + [f"  {f.line()}" for f in todo]
    return lines
