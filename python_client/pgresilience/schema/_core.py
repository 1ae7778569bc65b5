"""The I/O-free part of the schema version managers, shared by the sync and
async twins: what a version looks like, turning ``schema_changes_since`` rows
into change lists (diffing client-side where the database could not), the
last version seen, and the caches to clear when a new one arrives."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pgresilience.schema import diff

__all__ = [
    "ChangeList",
    "SchemaCache",
    "SchemaState",
    "SchemaVersion",
    "rated_history",
    "tracking_notes",
]

log = logging.getLogger("pgresilience.schema")

T = TypeVar("T")


@dataclass(frozen=True)
class SchemaVersion:
    """A schema version: number, SHA-256 hash, when it was taken, and its tables
    (``{"public.users": {"kind", "rls", "columns": [{"name", "type", ...}]}}``)."""

    version: int
    hash: str
    taken_at: str | None
    tables: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SchemaVersion:
        return cls(
            version=int(data.get("version") or 0),
            hash=str(data.get("hash") or ""),
            taken_at=None if data.get("taken_at") is None else str(data["taken_at"]),
            tables=dict(data.get("tables") or {}),
        )


class ChangeList(list[dict[str, Any]]):
    """The changes of one version: a plain list of change dicts (``type``,
    ``table``, ``column``, ``old_value``, ``new_value``, ``severity``,
    ``reason``) that also says which version it is."""

    def __init__(
        self,
        changes: Sequence[dict[str, Any]],
        *,
        version: int,
        hash: str,
        max_severity: str | None,
        tables: Sequence[str],
        origin: str,
        diffed_in: str,
    ) -> None:
        super().__init__(changes)
        self.version = version
        self.hash = hash
        self.max_severity = max_severity
        self.tables = list(tables)
        self.origin = origin
        self.diffed_in = diffed_in

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChangeList:
        """A ``schema_changes_since`` row; diffs ``deltas`` here when the
        database had no PL/Python (``changes`` is null)."""
        changes = row.get("changes")
        if changes is None:
            changes = diff.compute_changes(row.get("deltas") or [])
            severity = diff.max_severity(changes)
        else:
            severity = row.get("max_severity")
        return cls(
            changes,
            version=int(row["version"]),
            hash=str(row["hash"]),
            max_severity=severity,
            tables=row.get("tables") or [],
            origin=str(row.get("origin") or ""),
            diffed_in=str(row.get("diffed_in") or ""),
        )


def rated_history(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``schema_history_rated`` rows as history entries (``schema_history``'s
    fields) whose ``change_count`` and ``max_severity`` are always set: where
    the database could not diff, the client rates the deltas here."""
    entries: list[dict[str, Any]] = []
    for row in rows:
        changes = ChangeList.from_row(row)
        entry = {k: v for k, v in row.items() if k not in ("changes", "deltas")}
        entry["change_count"] = len(changes)
        entry["max_severity"] = changes.max_severity
        entries.append(entry)
    return entries


def tracking_notes(
    event_triggers: bool, plpython: bool, at_commit: bool, *, tracking: bool = True
) -> list[str]:
    """What a user must know about how changes reach them here (status, watch).
    ``plpython``: the database can diff (PL/Python diff installed);
    ``at_commit``: it does so at each commit (setting schema_diff_at_commit on)
    rather than when a version is first read; ``tracking``: setting
    schema_tracking is on."""
    notes: list[str] = []
    if not tracking:
        notes.append(
            "tracking: OFF (setting schema_tracking): schema changes appear ONLY after "
            "resilience.schema_refresh() (call it after every migration)"
        )
    elif not event_triggers:
        notes.append(
            "no event triggers here: schema changes appear ONLY after "
            "resilience.schema_refresh() (call it after every migration)"
        )
    if not plpython:
        notes.append(
            "no PL/Python diff here: the client computes each version's changes and severities"
        )
    elif not at_commit:
        notes.append(
            "changes are rated when first read, not at commit (setting schema_diff_at_commit "
            "off): NOTIFY payloads say rated=false, readers get severities"
        )
    return notes


class SchemaCache:
    """A small cache for values derived from the schema (column lists,
    generated models...). It clears itself when a new version arrives."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        self.version: int | None = None

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                return self._values[key]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._values[key] = value
        return value

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._values.get(key, default)

    def set(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._values[key] = value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def clear(self, version: int | None = None) -> None:
        with self._lock:
            self._values.clear()
            self.version = version


Callback = Callable[[ChangeList], Any]


class SchemaState:
    """What both managers remember between calls: the last version handed to
    callbacks, the callbacks, the current-version cache and the schema cache."""

    def __init__(self) -> None:
        self.last_version: int | None = None
        self.callbacks: list[Callback] = []
        self.current: SchemaVersion | None = None
        self.cache = SchemaCache()
        self._lock = threading.Lock()

    def forked(self) -> None:
        """In a forked child: a lock held by a thread of the parent at the
        fork would never be released here; both locks are made anew."""
        self._lock = threading.Lock()
        self.cache._lock = threading.Lock()

    def add_callback(self, callback: Callback) -> None:
        with self._lock:
            self.callbacks.append(callback)

    def seen(self, version: int) -> None:
        with self._lock:
            if self.last_version is None or version > self.last_version:
                self.last_version = version

    def accept(self, rows: Sequence[Mapping[str, Any]]) -> list[ChangeList]:
        """New versions among ``rows`` (oldest first), each once; clears caches."""
        fresh: list[ChangeList] = []
        with self._lock:
            for row in rows:
                version = int(row["version"])
                if self.last_version is not None and version <= self.last_version:
                    continue
                fresh.append(ChangeList.from_row(row))
                self.last_version = version
            if fresh:
                self.current = None
                self.cache.clear(fresh[-1].version)
        return fresh

    def since(self) -> int:
        return self.last_version or 0
