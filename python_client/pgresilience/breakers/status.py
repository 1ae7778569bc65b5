"""The shared-circuits section of ``pgresilience status``."""

from __future__ import annotations

from typing import Any

import psycopg

from ..queries import query

__all__ = ["status_lines"]


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """One line per shared circuit (``conn``: autocommit, pgresilience installed)."""
    rows = [row[0] for row in conn.execute(query("circuit_health")).fetchall()]
    if not rows:
        return ["shared circuits: none"]
    lines = [f"shared circuits: {len(rows)}"]
    for row in rows:
        rate = float(row.get("failure_rate") or 0.0)
        lines.append(
            f"  {row['name']}: {row['state']} ({row['message']}; failure rate {rate:.0%}; "
            f"changed {row['updated_at']} by {row.get('updated_by') or '?'})"
        )
    return lines
