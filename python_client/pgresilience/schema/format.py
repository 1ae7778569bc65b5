"""Human-readable lines for schema versions and changes (watch, demo, status)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgresilience.schema._core import ChangeList

__all__ = ["change_line", "version_lines"]


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def change_line(change: Mapping[str, Any]) -> str:
    """``[high] column_renamed public.users.name: name -> full_name (reason)``"""
    where = change.get("table") or change.get("object") or ""
    if change.get("column"):
        where = f"{where}.{change['column']}"
    elif change.get("object") and change.get("object") != change.get("table"):
        where = f"{where} {change['object']}".strip()
    values = ""
    old, new = change.get("old_value"), change.get("new_value")
    if change["type"] == "table_added" and isinstance(new, Mapping):
        columns = ", ".join(f"{c['name']} {c['type']}" for c in new.get("columns", []))
        values = f": ({_short(columns, 80)})"
    elif change["type"] in ("table_dropped", "view_dropped", "function_dropped", "function_added"):
        values = ""
    elif old is not None or new is not None:
        before = _short(old) if old is not None else "∅"
        after = _short(new) if new is not None else "∅"
        values = f": {before} -> {after}"
    return f"[{change['severity']}] {change['type']} {where}{values} ({change['reason']})"


def version_lines(changes: ChangeList) -> list[str]:
    head = (
        f"schema version {changes.version} ({changes.origin}, hash {changes.hash[:12]}): "
        f"{len(changes)} change(s), max severity {changes.max_severity or 'none'}"
    )
    return [head] + [f"  {change_line(c)}" for c in changes]
