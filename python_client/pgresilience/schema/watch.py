"""`pgresilience watch`: print every schema version and its changes as they commit."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

from pgresilience.queries import query
from pgresilience.schema._core import ChangeList, tracking_notes
from pgresilience.schema.format import version_lines
from pgresilience.schema.manager import SchemaVersionManager

__all__ = ["watch"]


def tracking_mode(dsn: str) -> tuple[bool, bool, bool, bool]:
    """(event triggers enabled, PL/Python diff available, diff at commit,
    tracking on) in that database. A role that may not read the package's
    settings (the app's resilience_user) gets the catalog's answer, the
    settings taken as their defaults: it still learns that without event
    triggers changes appear only after schema_refresh()."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(query("schema_tracking_mode")).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = conn.execute(query("schema_tracking_mode_catalog")).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1]), bool(row[2]), bool(row[3])


def watch(dsn: str, say: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
    """Block (until Ctrl-C or ``stop`` is set), printing changes through ``say``."""
    stop = stop or threading.Event()
    manager = SchemaVersionManager(dsn)
    current = manager.initialize()
    say(f"watching schema changes; current version {current.version} (hash {current.hash[:12]})")
    event_triggers, plpython, at_commit, tracking = tracking_mode(dsn)
    for note in tracking_notes(event_triggers, plpython, at_commit, tracking=tracking):
        say(note)

    gone: list[OSError] = []

    def print_version(changes: ChangeList) -> None:
        try:
            for line in version_lines(changes):
                say(line)
        except OSError as exc:
            # The reader went away (`watch | head -n 5`): stop, rather than
            # print into nothing until killed.
            gone.append(exc)
            stop.set()

    manager.on_schema_change(print_version)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        say("stopped")
    finally:
        manager.close()
    if gone:
        raise gone[0]
