"""The client's copy of the schema diff: plpython/schema_diff.py, loaded from
the package data, so the client and the database run the very same rules."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, cast

from pgresilience._resources import data_path

__all__ = [
    "canonical_json",
    "compute_changes",
    "max_severity",
    "object_hash",
    "schema_hash",
    "module",
]


@functools.cache
def module() -> ModuleType:
    """plpython/schema_diff.py as a module (loaded once)."""
    path = data_path("plpython") / "schema_diff.py"
    spec = importlib.util.spec_from_file_location("pgresilience._plpython_schema_diff", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def compute_changes(deltas: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Change records for a version's deltas (``schema_changes_since`` → ``deltas``)."""
    return cast(list[dict[str, Any]], module().compute_changes(deltas))


def max_severity(changes: Iterable[Mapping[str, Any]]) -> str | None:
    return cast("str | None", module().max_severity(changes))


def canonical_json(value: Any) -> str:
    return cast(str, module().canonical_json(value))


def object_hash(kind: str, data: Mapping[str, Any]) -> str:
    return cast(str, module().object_hash(kind, data))


def schema_hash(objects: Iterable[tuple[Any, str]]) -> str:
    """From ``(group, object_hash)`` pairs (group: table OID, else the object's OID)."""
    return cast(str, module().schema_hash(objects))
