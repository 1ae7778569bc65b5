"""The schema tracking section of `pgresilience status`."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience.queries import query

__all__ = ["status_lines"]


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """Current version, hash, tracking mode; ``conn`` is an autocommit connection."""
    row = conn.execute(query("schema_status")).fetchone()
    assert row is not None
    latest, count, tracking, notify_postgrest, event_triggers = row
    lines: list[str] = []
    if latest:
        lines.append(
            f"current version: {latest['version']} (hash {latest['hash'][:16]}…, "
            f"{latest['origin']} at {latest['taken_at']}, {latest['object_count']} objects)"
        )
        if latest.get("change_count") is not None:
            tables = ", ".join(latest["tables"]) or "-"
            severity = latest.get("max_severity") or "none"
            lines.append(
                f"last change: {latest['change_count']} change(s), max severity {severity}, "
                f"tables {tables}"
            )
    else:
        lines.append("current version: none (run resilience.schema_refresh())")
    lines.append(f"versions recorded: {count}")
    if tracking != "on":
        lines.append("tracking: OFF (setting schema_tracking); schema_refresh() records drift")
    elif event_triggers:
        lines.append("tracking: on (event triggers fold each transaction's DDL at commit)")
    else:
        lines.append(
            "tracking: no event triggers; call resilience.schema_refresh() after migrations"
        )
    lines.append(f"NOTIFY pgrst on change: {notify_postgrest or 'off'}")
    return lines
