"""An optional background janitor: calls ``tx_reap`` every ``interval``
seconds, for deployments without pg_cron. Nothing starts until ``start()``
(or ``with Janitor(...)``)."""

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
        self._manager = TransactionManager(source, pool_size=1)
        self._interval = interval
        self._max_count = max_count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reaped = 0

    def reap_once(self) -> int:
        count = self._manager.reap(self._max_count)
        self.reaped += count
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reap_once()
            except (PgResilienceError, OSError) as exc:  # keep going: the next round may work
                log.warning("pgresilience janitor: tx_reap failed: %s", exc)
            except Exception as exc:  # psycopg connection errors and the like
                log.warning("pgresilience janitor: %s", exc)
            self._stop.wait(self._interval)

    def start(self) -> Janitor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="pgresilience-janitor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._manager.close()

    def __enter__(self) -> Janitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
