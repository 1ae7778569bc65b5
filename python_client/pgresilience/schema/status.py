"""The schema tracking section of `pgresilience status`."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience.queries import query
from pgresilience.schema._core import rated_history, tracking_notes

__all__ = ["status_lines"]


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """Current version, hash, tracking mode; ``conn`` is an autocommit connection."""
    row = conn.execute(query("schema_status")).fetchone()
    assert row is not None
    latest, count, tracking, notify_postgrest, _ = row
    mode = conn.execute(query("schema_tracking_mode")).fetchone()
    assert mode is not None
    event_triggers, plpython, at_commit, _ = mode
    lines: list[str] = []
    if latest:
        lines.append(
            f"current version: {latest['version']} (hash {latest['hash'][:16]}…, "
            f"{latest['origin']} at {latest['taken_at']}, {latest['object_count']} objects)"
        )
        rated = rated_history(
            [r[0] for r in conn.execute(query("schema_history_rated"), {"n": 1}).fetchall()]
        )
        if rated and latest["origin"] != "baseline":
            last = rated[0]
            tables = ", ".join(last["tables"]) or "-"
            severity = last["max_severity"] or "none"
            lines.append(
                f"last change: {last['change_count']} change(s), max severity {severity}, "
                f"tables {tables}"
            )
    else:
        lines.append("current version: none (run resilience.schema_refresh())")
    lines.append(f"versions recorded: {count}")
    if tracking == "on" and event_triggers:
        lines.append("tracking: on (event triggers fold each transaction's DDL at commit)")
    lines += tracking_notes(
        bool(event_triggers), bool(plpython), bool(at_commit), tracking=tracking == "on"
    )
    lines.append(f"NOTIFY pgrst on change: {notify_postgrest or 'off'}")
    return lines
