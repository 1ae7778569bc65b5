"""The active logical transactions, for ``pgresilience status``."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience.queries import query

__all__ = ["status_lines"]


def status_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """One summary line, one line per active logical transaction, then
    whether PostgREST's db-pre-request hook reaps expired holders."""
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
    lines.extend(pre_request_lines(conn))
    return lines


def pre_request_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """PostgREST's in-database db-pre-request setting: with
    resilience.tx_pre_request there, a plain write meeting an expired claim
    rolls the holder back first instead of failing until the next reap."""
    settings = conn.execute(query("postgrest_pre_request")).fetchall()
    if not settings:
        return [
            "  PostgREST db-pre-request: not set in the database (set it to "
            "resilience.tx_pre_request so writes roll expired claim holders back first)"
        ]
    return [
        f"  PostgREST db-pre-request: {function} (role {role})"
        + ("" if "tx_pre_request" in function else ", which must call resilience.tx_pre_request()")
        for role, function in settings
    ]
