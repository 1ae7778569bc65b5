"""Fixtures of the schema-tracking attacks: the `tracker` of tests/schema
(runs a migration, returns the changes of the one version it made, in the
'database' and the 'client' diff mode) and a helper for the fold lock."""

from __future__ import annotations

from typing import Any

import psycopg
from schema.conftest import Tracker, db_tracker, mode, summary, tracker

__all__ = [
    "Tracker",
    "db_tracker",
    "fold_lock",
    "mode",
    "one_change",
    "summary",
    "tracker",
    "waiting_on_fold_lock",
]

# The key resilience._schema_lock() takes: holding it from another session
# keeps a migration's commit waiting inside its fold (deterministically).
FOLD_LOCK = "select pg_advisory_lock(hashtext('pgresilience-schema-fold'))"
FOLD_UNLOCK = "select pg_advisory_unlock(hashtext('pgresilience-schema-fold'))"


def fold_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(FOLD_LOCK)


def waiting_on_fold_lock(admin: psycopg.Connection[Any], pid: int, tries: int = 600) -> bool:
    """Whether backend ``pid`` comes to wait on an advisory lock (its fold),
    polled a bounded number of times."""
    for _ in range(tries):
        row = admin.execute(
            "select wait_event_type = 'Lock' and wait_event = 'advisory'"
            " from pg_stat_activity where pid = %s",
            (pid,),
        ).fetchone()
        if row and row[0]:
            return True
        admin.execute("select pg_sleep(0.05)")
    return False


def one_change(changes: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(changes) == 1, [(c["type"], c.get("object"), c["severity"]) for c in changes]
    return changes[0]
