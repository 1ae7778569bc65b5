"""Schema version tracking, client side: SchemaVersionManager (and its async
twin) read versions, run callbacks on every committed migration, and diff
client-side where the database has no PL/Python."""

from __future__ import annotations

from pgresilience.schema._core import ChangeList, SchemaCache, SchemaVersion
from pgresilience.schema.aio import AsyncSchemaVersionManager
from pgresilience.schema.manager import SchemaVersionManager

__all__ = [
    "AsyncSchemaVersionManager",
    "ChangeList",
    "SchemaCache",
    "SchemaVersion",
    "SchemaVersionManager",
]
