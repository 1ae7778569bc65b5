"""An optional background janitor: calls ``tx_reap`` every ``interval``
seconds, for deployments without pg_cron. Nothing starts until ``start()``
(or ``with Janitor(...)``). ``stop()`` waits a bounded time for a ``tx_reap``
in flight (one that waits on a row lock, or a database that hangs), and a
stopped janitor can be started again."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from pgresilience.errors import PgResilienceError
from pgresilience.transactions.manager import SyncSource, TransactionManager

__all__ = ["Janitor"]

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, source: SyncSource, interval: float = 10.0, max_count: int = 100) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._source = source
        self._manager = TransactionManager(source, pool_size=1)
        self._interval = interval
        self._max_count = max_count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.reaped = 0

    def reap_once(self) -> int:
        count = self._manager.reap(self._max_count)
        self.reaped += count
        return count

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.reap_once()
            except (PgResilienceError, OSError) as exc:  # keep going: the next round may work
                log.warning("pgresilience janitor: tx_reap failed: %s", exc)
            except Exception as exc:  # psycopg connection errors and the like
                log.warning("pgresilience janitor: %s", exc)
            stop.wait(self._interval)

    def start(self) -> Janitor:
        if self._thread is None:
            if self._stopped:  # stop() closed the manager's connections
                self._manager = TransactionManager(self._source, pool_size=1)
                self._stopped = False
            # Each thread its own event: a thread a stop() left behind (stuck
            # in a call) never runs again once that call returns.
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), name="pgresilience-janitor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop the loop; wait at most ``timeout`` seconds (None: for ever)
        for a ``tx_reap`` in flight. False when that call is still running:
        the thread (a daemon) leaves as soon as it returns."""
        self._stop.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
            if not stopped:
                log.warning(
                    "pgresilience janitor: a tx_reap still runs after %s s; left to finish", timeout
                )
            self._thread = None
        self._manager.close()
        self._stopped = True
        return stopped

    def __enter__(self) -> Janitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
