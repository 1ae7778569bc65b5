"""Opt-in shared state: breakers in many processes see one circuit.

Design (docs/breakers.md has the long form):

* Failures are counted locally; only transitions are written, through
  ``resilience._circuit_publish``.
* The database clock decides: an open circuit's deadline is stored as a
  timestamp computed with ``now()``; processes receive "open for N more
  seconds" and never compare their clocks with each other.
* Exactly one half-open probe across all processes: when a local open timeout
  ends, one caller per process (the others are rejected meanwhile) asks
  ``resilience._circuit_probe``, a conditional update that grants an
  expiring lease to one process only.
* Other processes learn of a transition through ``NOTIFY
  resilience_circuits`` (milliseconds) and, should a notification be lost, a
  re-read every ``refresh_interval`` seconds: the delay is bounded. News newer
  than what a process saw replaces its deadline, so after a failed probe
  elsewhere it is admitted again after ``timeout``, not after the lease.
* Every round trip is bounded: connect timeout, TCP keepalives, server-side
  ``statement_timeout``/``lock_timeout``, and a watchdog thread that cuts the
  connection of a round trip running past ``request_timeout`` (a frozen
  backend cannot enforce its own timeouts). A hang is then handled like a
  database that is down: ``available`` turns False, the breakers decide
  locally, unsent transitions are kept and published on reconnection. A
  row locked by someone else is not a hang: ``lock_timeout`` (half of
  ``request_timeout``) answers first, and only that circuit's transition
  waits, retried at each refresh.

All database I/O runs in one background thread with one connection; breaker
calls only enqueue work, except the probe question, whose one asker per
breaker waits for the answer at most ``request_timeout`` seconds (on the event
loop for async callers: never in an executor).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any
from weakref import WeakSet

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .._source import through_proxy
from ..queries import query
from .breaker import CircuitBreaker
from .core import Transition
from .state import CircuitState

__all__ = ["SharedCircuitStore", "StoreUnavailable"]

log = logging.getLogger("pgresilience.breakers.shared")

#: resilience.circuits.name's CHECK constraint.
MAX_NAME_LENGTH = 200

CHANNEL = "resilience_circuits"

#: Longest open time sent (100 years): an operator's open(float("inf"))
#: must open every process, and the database's timestamps end in 294276.
MAX_OPEN_SECONDS = 100 * 365.25 * 86400.0

#: States a process may publish (METRICS_ONLY is a local dry run; HALF_OPEN
#: is the probe lease, taken through _circuit_probe).
_PUBLISHED = frozenset(
    {CircuitState.CLOSED, CircuitState.OPEN, CircuitState.FORCED_OPEN, CircuitState.DISABLED}
)


class StoreUnavailable(Exception):
    """The database could not be reached; decide locally."""


#: every store of this process, for the fork hook below
_STORES: WeakSet[SharedCircuitStore] = WeakSet()


def _restart_in_child() -> None:
    """In a forked child (a web server's worker, the app loaded before the
    fork): see ``SharedCircuitStore._forked``."""
    for store in list(_STORES):
        store._forked()


os.register_at_fork(after_in_child=_restart_in_child)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SharedCircuitStore:
    """Shares the state of attached breakers through ``resilience.circuits``.

    ``store.attach(breaker)`` (or ``registry.get_breaker(name, shared=True)``
    after ``registry.use_shared_store(store)``). The constructor does no I/O;
    the background thread starts with the first ``attach``.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        owner: str | None = None,
        probe_lease: float = 15.0,
        refresh_interval: float = 1.0,
        connect_timeout: float = 2.0,
        retry_interval: float = 2.0,
        request_timeout: float = 2.0,
        keepalives_idle: int = 10,
    ) -> None:
        self.conninfo = conninfo
        self._owner_given = owner is not None
        self.owner = owner or _default_owner()
        self.probe_lease = probe_lease
        self.refresh_interval = refresh_interval
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        #: Bounds every round trip: the probe asker's wait, the server's
        #: statement and lock timeouts, and the watchdog.
        self.request_timeout = request_timeout
        self.keepalives_idle = keepalives_idle
        #: Probe questions sent to the database (tests and diagnostics).
        self.probe_questions = 0
        #: How other processes' transitions arrive: "listen" (NOTIFY, plus the
        #: refresh every ``refresh_interval``) or "poll" (the refresh alone,
        #: behind a pooler such as PgBouncer in transaction mode, where the
        #: session that would LISTEN is gone after each statement).
        self.mode = "listen"
        self._breakers: dict[str, CircuitBreaker] = {}
        self._versions: dict[str, int] = {}
        self._unsent: dict[str, Transition] = {}
        #: Circuits whose row was locked by someone else at the last try (I/O
        #: thread only): until the next refresh retries them, their publish
        #: jobs go straight to _unsent and their probes are decided locally,
        #: so a circuit that keeps changing costs one lock wait per refresh,
        #: not one per transition in the queue every circuit waits in.
        self._locked: set[str] = set()
        #: Publish jobs queued and not yet handled, per circuit (under _lock).
        self._queued: dict[str, int] = {}
        self._jobs: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._down_until = 0.0
        #: The last connection failure logged while not connected (see _lost).
        self._failure_logged: str | None = None
        self._connected = threading.Event()
        # The round trip in flight: its deadline and connection (watchdog).
        self._watch = threading.Condition(threading.Lock())
        self._busy_until: float | None = None
        self._busy_conn: psycopg.Connection[Any] | None = None
        # The watchdog outlives the I/O thread: a round trip hung when
        # close() is called must still be cut, or close() waits on it.
        self._io_finished = False
        #: Backend of the connection the watchdog cut: terminated on
        #: reconnection, so that a write it had received cannot land late.
        self._abandoned_pid: int | None = None
        #: The parent's connection, in a forked child: never used nor closed
        #: here (its session is the parent's), only kept from the collector.
        self._inherited: psycopg.Connection[Any] | None = None
        _STORES.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's I/O thread and watchdog are not
        here, its connection is the parent's session, and its owner name is
        the parent's (news under it would be ignored as our own). Left so,
        the child's breakers would publish nothing, learn nothing, wait
        ``request_timeout`` at every probe, and say "available". So the
        child starts afresh: its own owner name (unless one was given), its
        own connection and threads, and a catch-up of every attached circuit.
        The parent's queued work stays the parent's."""
        self._inherited, self._conn = self._conn, None
        if not self._owner_given:
            self.owner = _default_owner()
        self.probe_questions = 0
        self._unsent = {}
        self._locked = set()
        self._queued = {}
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down_until = 0.0
        self._failure_logged = None
        self._connected = threading.Event()
        self._watch = threading.Condition(threading.Lock())
        self._busy_until = None
        self._busy_conn = None
        self._io_finished = False
        self._abandoned_pid = None
        self._thread = self._watchdog = None
        if not self._closed and self._breakers:
            self._start()
            self._jobs.put(("catch_up", list(self._breakers)))

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgresilience-circuits", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch_round_trips, name="pgresilience-circuits-watchdog", daemon=True
        )
        self._thread.start()
        self._watchdog.start()

    # -- public ----------------------------------------------------------------

    def attach(self, breaker: CircuitBreaker) -> CircuitBreaker:
        name = breaker.name
        if self._closed:
            # Its I/O thread is gone: the breaker would share nothing, say
            # "available", and wait request_timeout at every probe.
            raise RuntimeError("this SharedCircuitStore is closed")
        # What resilience.circuits can hold: a name it refuses would fail
        # every round trip that carries it, the other breakers' included.
        if not 1 <= len(name) <= MAX_NAME_LENGTH or "\x00" in name:
            raise ValueError(
                f"a shared circuit's name is 1 to {MAX_NAME_LENGTH} characters "
                f"without NUL; got {name[:40]!r} ({len(name)} characters)"
            )
        with self._lock:
            self._breakers[breaker.name] = breaker
            breaker.attach_gate(self)
            if self._thread is None:
                self._start()
        self._jobs.put(("catch_up", [breaker.name]))
        return breaker

    def detach(self, breaker: CircuitBreaker) -> None:
        with self._lock:
            if self._breakers.get(breaker.name) is breaker:
                del self._breakers[breaker.name]
            breaker.attach_gate(None)

    @property
    def available(self) -> bool:
        """Whether the database answered last time we tried (False as well
        while a round trip hangs past ``request_timeout``)."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued work is done; False if the database is away."""
        done: Future[None] = Future()
        self._jobs.put(("flush", done))
        try:
            done.result(timeout)
        except (FutureTimeout, StoreUnavailable):
            return False
        return not self._unsent

    def close(self) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            # Behind what is queued (often the very last transition, a
            # circuit closed by its trial), which is sent first; _stop then
            # ends a worker stuck on a database that does not answer.
            self._jobs.put(("stop", None))
            thread.join(10)
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(10)
        for breaker in list(self._breakers.values()):
            self.detach(breaker)
        self._connected.clear()

    def __enter__(self) -> SharedCircuitStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- CircuitGate ------------------------------------------------------------

    def request_probe(self, breaker: CircuitBreaker) -> Future[bool] | None:
        if time.monotonic() < self._down_until:
            return None  # the database is away: the local breaker decides
        answer: Future[bool] = Future()
        self._jobs.put(("probe", (breaker, answer)))
        return answer

    def on_transition(self, breaker: CircuitBreaker, transition: Transition) -> None:
        if transition.remote or transition.new not in _PUBLISHED:
            return  # others' news, the probe lease, or a local dry run
        with self._lock:
            self._queued[breaker.name] = self._queued.get(breaker.name, 0) + 1
        self._jobs.put(("publish", (breaker, transition)))

    # -- the background thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            with self._watch:
                self._io_finished = True
                self._watch.notify_all()

    def _serve(self) -> None:
        next_refresh = 0.0
        stopping = False
        while not (stopping or self._stop.is_set()):
            conn = self._conn
            if conn is None and time.monotonic() >= self._down_until:
                conn = self._connect()
            try:
                job = self._jobs.get(timeout=0.05)
            except queue.Empty:
                job = None
            try:
                if job is not None:
                    if job[0] == "stop":
                        # Transitions not sent yet (the database was away
                        # when they were made): one last try.
                        stopping = True
                        if conn is not None:
                            self._send_unsent(conn)
                        break
                    self._handle(job, conn)
                if conn is not None:
                    for notice in conn.notifies(timeout=0.0):
                        self._on_notify(notice.payload)
                    if time.monotonic() >= next_refresh:
                        self._send_unsent(conn)
                        self._catch_up(conn, list(self._breakers))
                        next_refresh = time.monotonic() + self.refresh_interval
            except psycopg.OperationalError as error:
                self._lost(error)
            except Exception:
                log.exception("shared circuit state: unexpected error")
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> psycopg.Connection[Any] | None:
        try:
            conn = psycopg.connect(**self._connect_params())
            [(server_port,)] = self._round_trip(conn, "server_port", None)
            self.mode = "poll" if through_proxy(conn.info.port, server_port) else "listen"
            if self.mode == "listen":
                self._round_trip(conn, "circuit_listen", None)
            self._terminate_abandoned(conn)
        except psycopg.Error as error:
            self._lost(error)
            return None
        self._conn = conn
        self._connected.set()
        self._failure_logged = None
        log.info("shared circuit state: connected")
        # Unsent transitions first, then catch up on what happened meanwhile.
        try:
            self._send_unsent(conn)
            self._catch_up(conn, list(self._breakers))
        except psycopg.OperationalError as error:
            self._lost(error)
            return None
        except psycopg.Error:
            # Not the connection (a privilege, a function missing): as in
            # the serving loop, logged, and the I/O thread goes on.
            log.exception("shared circuit state: unexpected error")
        return conn

    def _terminate_abandoned(self, conn: psycopg.Connection[Any]) -> None:
        """End the backend of the round trip the watchdog gave up on: frozen,
        it may still hold our last statement and run it when it resumes (a
        stale transition landing over newer ones). The signal waits for it to
        resume; it then dies before running anything. Not behind a pooler,
        whose backend ids are not the server's."""
        pid, self._abandoned_pid = self._abandoned_pid, None
        if pid is None or self.mode != "listen":
            return
        try:
            self._round_trip(conn, "circuit_terminate", {"pid": pid})
        except psycopg.OperationalError:
            self._abandoned_pid = pid  # the next connection tries again
            raise
        except psycopg.Error:
            log.warning("shared circuit state: could not end the abandoned backend %s", pid)

    def _connect_params(self) -> dict[str, Any]:
        """The conninfo plus our bounds, where it does not set its own:
        connect timeout, TCP keepalives (a dead peer is noticed), and the
        server's own statement/lock timeouts (a lock wait ends on its own)."""
        params: dict[str, Any] = conninfo_to_dict(self.conninfo)
        millis = max(1, round(self.request_timeout * 1000))
        idle = max(1, self.keepalives_idle)
        defaults = {
            "connect_timeout": max(2, round(self.connect_timeout)),  # libpq's minimum is 2
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": max(1, idle // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": millis + idle * 1000,
            "application_name": "pgresilience-circuits",
        }
        for key, value in defaults.items():
            params.setdefault(key, value)
        # A lock wait ends before the watchdog's deadline, so a row someone
        # holds answers LockNotAvailable on a live connection (that circuit
        # retries later) instead of counting as a hung database for all.
        bounds = f"-c statement_timeout={millis} -c lock_timeout={max(1, millis // 2)}"
        params["options"] = f"{params['options']} {bounds}" if params.get("options") else bounds
        params["autocommit"] = True
        return params

    def _round_trip(
        self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None
    ) -> list[Any]:
        """One statement, watched: past request_timeout the watchdog cuts the
        connection and this raises OperationalError."""
        with self._watch:
            self._busy_until = time.monotonic() + self.request_timeout
            self._busy_conn = conn
            self._watch.notify()
        try:
            # No server-side prepared statements: a pooler in transaction
            # mode hands the next statement to another session.
            cursor = conn.execute(query(name), params, prepare=False)
            return cursor.fetchall() if cursor.description is not None else []
        finally:
            with self._watch:
                self._busy_until = None
                self._busy_conn = None

    def _watch_round_trips(self) -> None:
        with self._watch:
            while not self._io_finished:
                deadline = self._busy_until
                if deadline is None:
                    self._watch.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._watch.wait(remaining)
                    continue
                conn, self._busy_conn, self._busy_until = self._busy_conn, None, None
                if conn is not None:
                    self._hung(conn)

    def _hung(self, conn: psycopg.Connection[Any]) -> None:
        """A round trip overran: the database counts as down from now on, and
        the blocked I/O thread gets an error by the socket being shut (neither
        a cancel request nor the server's timeouts reach a frozen backend)."""
        log.warning(
            "shared circuit state: no answer within %.3gs; using local state", self.request_timeout
        )
        self._connected.clear()
        self._down_until = time.monotonic() + self.retry_interval
        try:
            self._abandoned_pid = conn.info.backend_pid
        except psycopg.Error:
            pass
        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.Error):
            pass  # already closed: the I/O thread has moved on

    def _lost(self, error: BaseException) -> None:
        # Logged when the connection goes, and when a connection attempt
        # fails for a new reason: a store that never connected (a pooler
        # refusing the startup `options`, a wrong password) says why once,
        # not at every retry.
        if self._connected.is_set() or self._conn is not None or str(error) != self._failure_logged:
            log.warning("shared circuit state: database unreachable (%s); using local state", error)
            self._failure_logged = str(error)
        self._connected.clear()
        self._down_until = time.monotonic() + self.retry_interval
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _handle(self, job: tuple[str, Any], conn: psycopg.Connection[Any] | None) -> None:
        kind, data = job
        if kind == "publish":
            breaker, transition = data
            with self._lock:
                self._queued[breaker.name] -= 1
            if conn is None or breaker.name in self._locked:
                self._unsent[breaker.name] = transition
                return
            try:
                self._publish(conn, breaker, transition)
            except psycopg.errors.LockNotAvailable:
                self._row_locked(breaker.name)
                self._unsent[breaker.name] = transition  # sent at a later refresh
                return
            except psycopg.OperationalError:
                self._unsent[breaker.name] = transition
                raise
            self._unsent.pop(breaker.name, None)  # this one is newer
        elif kind == "probe":
            breaker, answer = data
            if not answer.set_running_or_notify_cancel():
                return  # the asker gave up waiting and decided locally
            if conn is None or breaker.name in self._locked:
                answer.set_exception(StoreUnavailable())  # the asker decides locally
                return
            self.probe_questions += 1
            try:
                row = self._fetch(
                    conn,
                    "circuit_probe",
                    {
                        "name": breaker.name,
                        "owner": self.owner,
                        "lease_seconds": self.probe_lease,
                    },
                )
            except psycopg.errors.LockNotAvailable:
                self._row_locked(breaker.name)
                answer.set_exception(StoreUnavailable())  # the asker decides locally
                return
            except Exception:
                # Connection lost, or an error the database answered with
                # (a privilege): the asker decides locally at once.
                answer.set_exception(StoreUnavailable())
                raise
            answer.set_result(self._probe_answer(breaker, row))
        elif kind == "catch_up":
            if conn is not None:
                self._catch_up(conn, data)
        elif kind == "flush":
            if conn is None:
                data.set_exception(StoreUnavailable())
            else:
                data.set_result(None)

    def _row_locked(self, name: str) -> None:
        # The database answered (lock_timeout): it is up, only this circuit's
        # row is held by someone else's transaction. Other circuits go on.
        log.warning("shared circuit state: the row of circuit %r is locked; retrying", name)
        self._locked.add(name)

    def _send_unsent(self, conn: psycopg.Connection[Any]) -> None:
        """Publish the transitions kept back (the database was away, or the
        row locked); one whose row is still locked waits for the next refresh."""
        self._locked.clear()  # tried again now; still locked ones are marked again
        for name, transition in list(self._unsent.items()):
            breaker = self._breakers.get(name)
            if breaker is None:
                self._unsent.pop(name, None)
                continue
            try:
                self._publish(conn, breaker, transition)
            except psycopg.errors.LockNotAvailable:
                self._row_locked(name)
                continue
            except psycopg.OperationalError:
                raise  # the connection: kept for the reconnection
            except psycopg.Error:
                # Refused for good (a privilege): dropped, as a publish job
                # would be, so that it cannot block every later refresh.
                log.exception("shared circuit state: publishing circuit %r failed", name)
            if self._unsent.get(name) is transition:
                del self._unsent[name]

    def _fetch(
        self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        (row,) = self._round_trip(conn, name, params)
        result: dict[str, Any] = row[0]
        return result

    def _probe_answer(self, breaker: CircuitBreaker, row: dict[str, Any]) -> bool:
        """True: run the trial. Refused: adopt the shared row first (its
        deadline, or the lease another process holds), so the asker's
        breaker waits for the right time."""
        if row.get("granted"):
            self._versions[breaker.name] = int(row["version"])
            # News of an earlier failed probe may still wait behind this
            # answer (and will be skipped as older): back off from the row.
            breaker.core.adopt_open_count(int(row.get("open_count") or 0))
            return True
        self._adopt(breaker, row, force=True)
        return row["state"] in ("closed", "disabled")

    def _publish(
        self, conn: psycopg.Connection[Any], breaker: CircuitBreaker, transition: Transition
    ) -> None:
        # Seconds still to go by our clock; the database turns them into a deadline.
        remaining = transition.at + transition.open_for - breaker.clock()
        row = self._fetch(
            conn,
            "circuit_publish",
            {
                "name": breaker.name,
                "state": transition.new.value,
                "open_seconds": (
                    min(max(0.0, remaining), MAX_OPEN_SECONDS)
                    if transition.new is CircuitState.OPEN
                    else 0.0
                ),
                "reason": transition.reason,
                "owner": self.owner,
                "failure_rate": breaker.metrics.failure_rate,
                "forced": transition.manual,
            },
        )
        if row["state"] != transition.new.value:
            self._adopt(breaker, row, force=True)  # refused: take the shared view
            return
        self._versions[breaker.name] = max(int(row["version"]), self._versions.get(breaker.name, 0))
        with self._lock:
            settled = not self._queued.get(breaker.name)
        if settled and breaker.core.state.value != row["state"]:
            # Accepted, but the local state moved on meanwhile through news
            # older than this write (a NOTIFY handled before our row landed),
            # or our own transitions were queued out of order by two
            # threads: the row is now the latest word, so adopt it. A local
            # transition still on its way is published next, and its
            # answer settles the state again.
            self._adopt(breaker, row, force=True)

    def _catch_up(self, conn: psycopg.Connection[Any], names: list[str]) -> None:
        if not names:
            return
        for (row,) in self._round_trip(conn, "circuit_get", {"names": names}):
            breaker = self._breakers.get(row["name"])
            if breaker is not None:
                self._adopt(breaker, row)

    def _on_notify(self, payload: str) -> None:
        try:
            row = json.loads(payload)
        except ValueError:
            return
        breaker = self._breakers.get(row.get("name"))
        if breaker is not None and row.get("updated_by") != self.owner:
            self._adopt(breaker, row)

    def _adopt(self, breaker: CircuitBreaker, row: dict[str, Any], *, force: bool = False) -> None:
        """Bring the local breaker in line with the shared row."""
        version = int(row.get("version") or 0)
        if not force and version <= self._versions.get(breaker.name, 0):
            return  # nothing newer than what we saw (or wrote)
        self._versions[breaker.name] = max(version, self._versions.get(breaker.name, 0))
        state = CircuitState(row["state"])
        reason = f"shared: {row.get('reason') or state.value}"
        now = breaker.clock()
        # Newer news (or an answer to us) replaces the local deadline.
        if state is CircuitState.HALF_OPEN:
            if row.get("probe_owner") == self.owner:
                return
            # Someone else probes: stay (or become) open until they decide.
            breaker.core.apply_remote(
                CircuitState.OPEN,
                now,
                float(row.get("lease_for") or 0),
                reason,
                exact=True,
                open_count=int(row.get("open_count") or 0),
            )
        else:
            # News newer than our grant, written by another process, ends a
            # probe of ours: a reset (operators always win) or a close by the
            # process that took over our expired lease. A hung trial must not
            # keep this process half-open, nor its late failure re-open all.
            breaker.core.apply_remote(
                state,
                now,
                float(row.get("open_for") or 0),
                reason,
                exact=True,
                probe_over=not force and row.get("updated_by") != self.owner,
                open_count=int(row.get("open_count") or 0),
            )
        breaker.dispatch_pending()
