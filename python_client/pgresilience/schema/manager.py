"""SchemaVersionManager: the schema version, its history, and live change
callbacks through LISTEN resilience_schema, with automatic reconnect that
catches up on every version committed while it was disconnected."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

import psycopg

from pgresilience.errors import map_error
from pgresilience.queries import query
from pgresilience.schema._core import (
    Callback,
    ChangeList,
    SchemaCache,
    SchemaState,
    SchemaVersion,
    rated_history,
)

__all__ = ["LISTENER_NAME", "SchemaVersionManager"]

log = logging.getLogger("pgresilience.schema")

#: application_name of the listener connection (visible in pg_stat_activity)
LISTENER_NAME = "pgresilience-schema-listener"


class SchemaVersionManager:
    """Watch the schema of one database.

    Nothing touches the database until ``initialize()`` (or the first call that
    needs it). Callbacks run on the listener thread, one version at a time,
    oldest first, each version once.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        self._conninfo = conninfo
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._poll_interval = poll_interval
        self._state = SchemaState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._initialized = False
        #: set while the listener is connected and listening
        self.listening = threading.Event()
        #: how many times the listener (re)connected
        self.connections = 0

    # -- public API ------------------------------------------------------------

    @property
    def cache(self) -> SchemaCache:
        """Cache for schema-derived values; cleared when a new version arrives."""
        return self._state.cache

    @property
    def last_version(self) -> int | None:
        """The newest version this manager knows of."""
        return self._state.last_version

    def initialize(self) -> SchemaVersion:
        """Read the current version; callbacks get the versions after it."""
        current = self._fetch_current()
        self._state.seen(current.version)
        self._state.current = current
        self._initialized = True
        return current

    def on_schema_change(self, callback: Callback) -> None:
        """Call ``callback(changes)`` for every new version (``changes`` is a
        list of change dicts with ``.version``, ``.hash``, ``.max_severity``)."""
        if not self._initialized:
            self.initialize()
        self._state.add_callback(callback)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._listen, name="pgresilience-schema-listener", daemon=True
            )
            self._thread.start()

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """Block until the listener is connected (tests, demos)."""
        return self.listening.wait(timeout)

    def force_refresh(self) -> SchemaVersion:
        """Full re-snapshot in the database (``schema_refresh()``); callbacks
        get any drift it recorded before this returns."""
        self._one("schema_refresh")
        self.catch_up()
        self._state.current = None
        return self.get_current_version()

    def get_current_version(self) -> SchemaVersion:
        """The current version (``.version``, ``.hash``, ``.tables``); served
        from memory while the listener guarantees it is fresh."""
        current = self._state.current
        if current is not None and self.listening.is_set():
            return current
        current = self._fetch_current()
        self._state.current = current
        return current

    def history(self, max_count: int = 50) -> list[dict[str, Any]]:
        """Versions, newest first."""
        return rated_history(
            [row[0] for row in self._rows("schema_history_rated", {"n": max_count})]
        )

    def changes_since(self, version: int) -> list[ChangeList]:
        """Changes of every version after ``version``, oldest first."""
        return [
            ChangeList.from_row(row[0]) for row in self._rows("schema_changes_since", (version,))
        ]

    def catch_up(self) -> list[ChangeList]:
        """Deliver versions newer than the last one seen; returns them."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                return self._deliver(conn)
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._poll_interval + 5.0)
        self._thread = None
        self.listening.clear()

    def __enter__(self) -> SchemaVersionManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _rows(self, name: str, params: Any = ()) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                return conn.execute(query(name), params).fetchall()
        except psycopg.Error as exc:
            raise map_error(exc) from exc

    def _one(self, name: str) -> Any:
        rows = self._rows(name)
        return rows[0][0] if rows else None

    def _fetch_current(self) -> SchemaVersion:
        return SchemaVersion.from_json(self._one("schema_current") or {})

    def _deliver(self, conn: psycopg.Connection[Any]) -> list[ChangeList]:
        rows = conn.execute(query("schema_changes_since"), (self._state.since(),)).fetchall()
        fresh = self._state.accept([row[0] for row in rows])
        for changes in fresh:
            for callback in list(self._state.callbacks):
                try:
                    callback(changes)
                except Exception:  # a callback's bug must not stop the listener
                    log.exception("schema change callback failed for version %s", changes.version)
        return fresh

    def _listen(self) -> None:
        delay = self._reconnect_delay
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, application_name=LISTENER_NAME
                ) as conn:
                    conn.execute(query("schema_listen"))
                    self.connections += 1
                    # Versions committed while we were not listening.
                    self._deliver(conn)
                    self.listening.set()
                    delay = self._reconnect_delay
                    while not self._stop.is_set():
                        notified = False
                        for _ in conn.notifies(timeout=self._poll_interval, stop_after=1):
                            notified = True
                        if notified:
                            self._deliver(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("schema listener disconnected (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._max_reconnect_delay)
        self.listening.clear()
