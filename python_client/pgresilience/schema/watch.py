"""`pgresilience watch`: print every schema version and its changes as they commit."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pgresilience.schema._core import ChangeList
from pgresilience.schema.format import version_lines
from pgresilience.schema.manager import SchemaVersionManager

__all__ = ["watch"]


def watch(dsn: str, say: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
    """Block (until Ctrl-C or ``stop`` is set), printing changes through ``say``."""
    stop = stop or threading.Event()
    manager = SchemaVersionManager(dsn)
    current = manager.initialize()
    say(f"watching schema changes; current version {current.version} (hash {current.hash[:12]})")

    def print_version(changes: ChangeList) -> None:
        for line in version_lines(changes):
            say(line)

    manager.on_schema_change(print_version)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        say("stopped")
    finally:
        manager.close()
