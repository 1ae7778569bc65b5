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

__all__ = ["status_lines", "head_revision", "TESTED_MAJORS"]

# PostgreSQL major versions the test suite runs on (`make test`: 15,
# `make test-matrix`: the others).
TESTED_MAJORS = range(14, 19)

Section = Callable[[psycopg.Connection[Any]], list[str]]


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(data_path("alembic")))
    return ScriptDirectory.from_config(config)


def head_revision() -> str | None:
    return _scripts().get_current_head()


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
    functions, tables, wrappers, wrapper_schemas, plpython, event_triggers, roles, disabled = row
    head = head_revision()
    if revision == head:
        upgrade = ""
    elif revision in {r.revision for r in _scripts().walk_revisions()}:
        upgrade = f" (upgrade available: {head})"
    else:
        upgrade = f" (by a newer pgresilience: this one knows up to {head})"
    tracked = event_triggers and not disabled
    lines = [
        f"installed: revision {revision}{upgrade}",
        _server_line(conn, plpython=plpython, event_triggers=event_triggers if tracked else 0),
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
            if tracked
            else f"{event_triggers} ({disabled} of schema tracking's disabled: DDL tracking "
            "falls back to resilience.schema_refresh())"
            if event_triggers
            else "none (DDL tracking falls back to resilience.schema_refresh())"
        ),
        f"roles: {', '.join(roles) if roles else 'missing (only the owner can use the API)'}",
    ]
    return lines


def _server_line(conn: psycopg.Connection[Any], *, plpython: bool, event_triggers: int) -> str:
    """The server's version and what of pgresilience works on it."""
    number = conn.info.server_version  # e.g. 170010 for 17.10
    major, minor = divmod(number, 10000)
    lo, hi = TESTED_MAJORS[0], TESTED_MAJORS[-1]
    support = "tested" if major in TESTED_MAJORS else f"not tested: {lo} to {hi} are"
    tracking = "DDL tracked at commit" if event_triggers else "schema_refresh() only"
    diff = "diff in the database" if plpython else "diff by the Python client"
    cron = conn.execute(query("extension_exists"), ("pg_cron",)).fetchone() is not None
    return (
        f"server: PostgreSQL {major}.{minor} ({support}); active: logical transactions, "
        f"schema versions ({tracking}, {diff}), circuits; pg_cron: "
        + ("installed" if cron else "not installed (tx_begin reaps lazily)")
    )


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """The status report; ``conn`` is an autocommit connection."""
    info = conn.info
    lines = [f"pgresilience {__version__} · database {info.dbname} on {info.host}:{info.port}"]
    revision = installed_revision(conn)
    if revision is None:
        return lines + ["not installed (run: pgresilience install)"]
    lines += _installation(conn, revision)
    if revision != head_revision():
        # The sections read the database with this release's functions, which
        # another release's install may lack or define otherwise.
        older = revision in {r.revision for r in _scripts().walk_revisions()}
        step = (
            "run pgresilience install to upgrade (this release's sections need its functions)"
            if older
            else "use the pgresilience that installed it for its sections"
        )
        return lines + ["", "[to do]", f"  {step}"]
    for title, section in _feature_sections():
        lines += ["", f"[{title}]"] + [f"  {line}" for line in section(conn)]
    todo = follow_ups(conn)
    if todo:
        lines += ["", "[to do]"] + [f"  {f.line()}" for f in todo]
    return lines
