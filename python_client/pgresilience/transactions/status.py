"""The active logical transactions, for ``pgresilience status``."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience.queries import query

__all__ = ["status_lines"]


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """One summary line, then one line per active logical transaction."""
    rows = conn.execute(query("tx_active_overview")).fetchall()
    lines = [f"logical transactions: {len(rows)} active"]
    for tx_id, role, sub, label, started, expires, expired, claims in rows:
        owner = role if sub is None else f"{role}/{sub}"
        state = "EXPIRED (reaped by the next tx_reap)" if expired else f"expires {expires:%H:%M:%S}"
        name = f" {label!r}" if label else ""
        lines.append(
            f"  {tx_id}{name} owner {owner}, started {started:%H:%M:%S}, {state}, "
            f"{claims} claimed rows"
        )
    return lines
