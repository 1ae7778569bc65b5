"""``CircuitBreaker``: runs calls through the state machine, sync or async.

The hot path (CLOSED, call succeeds) reads the state without the lock (a
stale read is harmless, see ``core``), times the call, and takes the lock
once to record the outcome. No lock is ever held while the protected call
runs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, overload

from .clock import Clock, monotonic
from .config import CircuitBreakerConfig, Outcome
from .core import PROBE_NEEDED, REJECTED, CircuitCore, Transition
from .errors import CircuitOpenError
from .listeners import ListenerSet
from .state import CircuitState

__all__ = ["CircuitBreaker", "CircuitGate", "CircuitMetrics"]

log = logging.getLogger("pgresilience.breakers")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CLOSED = CircuitState.CLOSED
_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_IGNORED = Outcome.IGNORED


class CircuitGate(Protocol):
    """Where a breaker's state is shared (see ``breakers.shared``)."""

    def request_probe(self, breaker: CircuitBreaker) -> float | None:
        """Ask to run the one half-open trial: None if granted, else seconds to wait."""

    def on_transition(self, breaker: CircuitBreaker, transition: Transition) -> None:
        """This process made a transition; tell the others (must not block long)."""


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """Counters since creation or the last ``reset()``, and the window's rates."""

    state: CircuitState
    calls: int
    successes: int
    failures: int
    slow_calls: int
    rejections: int
    ignored: int
    #: Over the sliding window (0.0 when the window is not used or empty).
    failure_rate: float
    slow_call_rate: float
    window_calls: int
    consecutive_failures: int


class CircuitBreaker:
    """A circuit breaker around calls to one flaky service.

    ``CircuitBreaker("gemini-api", failure_threshold=5, timeout=60.0)``, or
    pass a ``CircuitBreakerConfig``. ``clock`` is any zero-argument callable
    returning seconds (``time.monotonic`` by default).
    """

    __slots__ = (
        "name",
        "config",
        "_core",
        "_clock",
        "_listeners",
        "_record_types",
        "_record_predicates",
        "_ignore_types",
        "_ignore_predicates",
        "_record_result",
        "_retry_after",
        "_gate",
        "_plain",
        "__weakref__",
    )

    def __init__(
        self,
        name: str = "default",
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        listeners: tuple[object, ...] | list[object] = (),
        **options: Any,
    ) -> None:
        if config is None:
            config = CircuitBreakerConfig(**options)
        elif options:
            config = config.replace(**options)
        self.name = name
        self.config = config
        self._core = CircuitCore(config)
        self._clock: Clock = clock if clock is not None else monotonic
        self._listeners = ListenerSet()
        self._record_types = tuple(m for m in config.record_exceptions if isinstance(m, type))
        self._record_predicates = tuple(
            m for m in config.record_exceptions if not isinstance(m, type)
        )
        self._ignore_types = tuple(m for m in config.ignore_exceptions if isinstance(m, type))
        self._ignore_predicates = tuple(
            m for m in config.ignore_exceptions if not isinstance(m, type)
        )
        self._record_result = config.record_result
        self._retry_after = config.retry_after
        self._gate: CircuitGate | None = None
        self._plain = False
        for listener in listeners:
            self._listeners.add(listener)
        self._update_plain()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._core.state.value}>"

    # -- running calls -----------------------------------------------------

    def execute(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` through the breaker.

        A rejected call raises ``CircuitOpenError``; a call that fails (per
        ``record_exceptions`` / ``record_result``) re-raises. With
        ``fallback``, both answer ``fallback()`` instead.
        """
        core = self._core
        permit = core.epoch
        if core.state is not CLOSED or not self._plain:
            return self._execute(fn, args, kwargs, fallback)
        # The hot path: CLOSED, nothing to time, nothing to inspect.
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if self._failed(exc, permit, None) and fallback is not None:
                return cast(T, fallback())
            raise
        core.closed_success(permit)
        return result

    def _execute(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: Callable[[], Any] | None,
    ) -> T:
        core = self._core
        clock = self._clock
        # Lock-free admission in CLOSED: read the epoch before the state, so
        # a racing transition leaves us with a stale permit, never a wrong one.
        permit = core.epoch
        if core.state is not CLOSED:
            permit = self._admit(clock())
            if permit < 0:
                return cast(T, self._rejected(fallback))
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if self._failed(exc, permit, start) and fallback is not None:
                return cast(T, fallback())
            raise
        end = clock()
        if self._record_result is not None and self._is_bad_result(result):
            self._bad_result(permit, start, end)
            if fallback is not None:
                return cast(T, fallback())
            return result
        core.record(permit, end, end - start, _SUCCESS)
        if core.pending:
            self.dispatch_pending()
        if self._listeners.on_success:
            ListenerSet.fire(self._listeners.on_success, self, end - start)
        return result

    async def execute_async(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        fallback: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """``await fn(*args, **kwargs)`` through the breaker (``call_timeout``
        applies). ``fallback`` may be sync or async."""
        return await self._execute_async(fn, args, kwargs, fallback)

    async def _execute_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: Callable[[], Any] | None,
    ) -> T:
        core = self._core
        clock = self._clock
        permit = core.epoch
        if core.state is not CLOSED:
            permit = core.acquire(clock())
            if permit == PROBE_NEEDED:
                # Asking the shared gate is I/O: keep it off the event loop.
                permit = await asyncio.to_thread(self._probe, clock())
            if core.pending:
                self.dispatch_pending()
            if permit < 0:
                return cast(T, await _maybe_await(self._rejected(fallback)))
        start = clock()
        timeout = self.config.call_timeout
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                async with asyncio.timeout(timeout):
                    result = await fn(*args, **kwargs)
        except BaseException as exc:
            if self._failed(exc, permit, start) and fallback is not None:
                return cast(T, await _maybe_await(fallback()))
            raise
        end = clock()
        if self._record_result is not None and self._is_bad_result(result):
            self._bad_result(permit, start, end)
            if fallback is not None:
                return cast(T, await _maybe_await(fallback()))
            return result
        core.record(permit, end, end - start, _SUCCESS)
        if core.pending:
            self.dispatch_pending()
        if self._listeners.on_success:
            ListenerSet.fire(self._listeners.on_success, self, end - start)
        return result

    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(
        self, fn: None = None, /, *, fallback: Callable[..., Any] | None = None
    ) -> Callable[[F], F]: ...

    def __call__(
        self, fn: F | None = None, /, *, fallback: Callable[..., Any] | None = None
    ) -> F | Callable[[F], F]:
        """Decorator: ``@breaker`` or ``@breaker(fallback=...)`` on a sync or
        async function. The fallback receives the decorated function's
        arguments."""
        if fn is None:
            return lambda target: self._decorate(target, fallback)
        return self._decorate(fn, fallback)

    def _decorate(self, fn: F, fallback: Callable[..., Any] | None) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
                return await self._execute_async(fn, args, kwargs, bound)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if fallback is None and "fallback" not in kwargs:
                return self.execute(fn, *args, **kwargs)  # the fast path
            bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
            return self._execute(fn, args, kwargs, bound)

        return cast(F, wrapper)

    # -- slow paths ----------------------------------------------------------

    def _admit(self, now: float) -> int:
        core = self._core
        permit = core.acquire(now)
        if permit == PROBE_NEEDED:
            permit = self._probe(now)
        if core.pending:
            self.dispatch_pending()
        return permit

    def _probe(self, now: float) -> int:
        """The open timeout is over and the state is shared: ask the gate."""
        gate = self._gate
        wait = None if gate is None else gate.request_probe(self)
        core = self._core
        if wait is None:
            # Granted, or the gate adopted a state that admits calls.
            return core.begin_half_open(self._clock(), "open timeout elapsed")
        # Refused: the gate has pushed the local deadline to the shared one.
        core.count_rejection()
        return REJECTED

    def _rejected(self, fallback: Callable[[], Any] | None) -> Any:
        if self._listeners.on_rejected:
            ListenerSet.fire(self._listeners.on_rejected, self)
        if fallback is not None:
            return fallback()
        core = self._core
        # Unlocked reads: a rejection is advice, a racing transition only
        # makes retry_after a little stale.
        state = core.state
        if state is CircuitState.FORCED_OPEN:
            retry_after = None
        elif state is CircuitState.OPEN:
            retry_after = max(0.0, core.open_until - self._clock())
        else:
            retry_after = 0.0
        raise CircuitOpenError(self.name, state, retry_after)

    def _classify(self, exc: BaseException) -> int:
        if not isinstance(exc, Exception):
            return _IGNORED  # cancellation, KeyboardInterrupt, SystemExit
        if self._ignore_types and isinstance(exc, self._ignore_types):
            return _IGNORED
        for predicate in self._ignore_predicates:
            if _matches(predicate, exc):
                return _IGNORED
        if self._record_types and isinstance(exc, self._record_types):
            return _FAILURE
        for predicate in self._record_predicates:
            if _matches(predicate, exc):
                return _FAILURE
        return _SUCCESS  # not a failure of the service: it answered

    def _update_plain(self) -> None:
        """Whether successes in CLOSED can skip timing and inspection."""
        config = self.config
        self._plain = (
            config.window_type == "count"
            and config.slow_call_duration is None
            and config.record_result is None
            and not self._listeners.on_success
            and not self._listeners.on_failure
        )

    def _failed(self, exc: BaseException, permit: int, start: float | None) -> bool:
        """Record a raised call; True when it counted as a failure."""
        end = self._clock()
        if start is None:
            start = end  # untimed hot path: nothing needs the duration
        outcome = self._classify(exc)
        hint = None
        if outcome == _FAILURE and self._retry_after is not None:
            try:
                hint = self._retry_after(exc)
            except Exception:
                log.exception("retry_after hint extractor failed")
        core = self._core
        core.record(permit, end, end - start, outcome, hint)
        if core.pending:
            self.dispatch_pending()
        listeners = self._listeners
        if outcome == _FAILURE:
            if listeners.on_failure:
                ListenerSet.fire(listeners.on_failure, self, exc, end - start)
            return True
        if outcome == _SUCCESS and listeners.on_success:
            ListenerSet.fire(listeners.on_success, self, end - start)
        return False

    def _is_bad_result(self, result: Any) -> bool:
        assert self._record_result is not None
        try:
            return bool(self._record_result(result))
        except Exception:
            log.exception("record_result predicate failed")
            return False

    def _bad_result(self, permit: int, start: float, end: float) -> None:
        core = self._core
        core.record(permit, end, end - start, _FAILURE)
        if core.pending:
            self.dispatch_pending()
        if self._listeners.on_failure:
            ListenerSet.fire(self._listeners.on_failure, self, None, end - start)

    def dispatch_pending(self) -> None:
        """Hand queued transitions to the gate and the listeners, lock released."""
        for transition in self._core.take_pending():
            log.info(
                "circuit %r: %s -> %s (%s)",
                self.name,
                transition.old.value,
                transition.new.value,
                transition.reason,
            )
            gate = self._gate
            if gate is not None:
                try:
                    gate.on_transition(self, transition)
                except Exception:
                    log.exception("shared circuit state: publishing a transition failed")
            if self._listeners.on_state_change:
                ListenerSet.fire(self._listeners.on_state_change, self, transition)

    # -- inspection and control ------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN circuit whose time is up reads HALF_OPEN)."""
        state = self._core.poll(self._clock())
        if self._core.pending:
            self.dispatch_pending()
        return state

    @property
    def metrics(self) -> CircuitMetrics:
        core = self._core
        now = self._clock()
        state = self.state
        with core.lock:
            window = core.window
            window.expire(now)
            return CircuitMetrics(
                state=state,
                calls=core.successes + core.failures + core.ignored,
                successes=core.successes,
                failures=core.failures,
                slow_calls=core.slow_calls,
                rejections=core.rejections,
                ignored=core.ignored,
                failure_rate=window.failure_rate(),
                slow_call_rate=window.slow_rate(),
                window_calls=window.calls,
                consecutive_failures=core.consecutive_failures,
            )

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call may be admitted (0.0 if now; None: until reset())."""
        return self._core.retry_after(self._clock())

    def health(self) -> dict[str, Any]:
        """``{"healthy", "state", "failure_rate", "message"}`` for dashboards."""
        metrics = self.metrics
        state = metrics.state
        if state is CircuitState.OPEN:
            wait = self.retry_after or 0.0
            message = f"Circuit open - retry in {round(wait * 1000)}ms"
        elif state is CircuitState.HALF_OPEN:
            message = "Circuit half-open - trial calls decide"
        elif state is CircuitState.FORCED_OPEN:
            message = "Circuit forced open - rejecting until reset"
        elif state is CircuitState.DISABLED:
            message = "Circuit disabled - all calls pass"
        else:
            message = "Circuit closed"
        return {
            "healthy": state is CLOSED or state is CircuitState.DISABLED,
            "state": state.value,
            "failure_rate": metrics.failure_rate,
            "message": message,
        }

    def force_open(self) -> None:
        """Reject every call until ``reset()``."""
        self._core.force_open(self._clock())
        self.dispatch_pending()

    def disable(self) -> None:
        """Let every call through and record nothing until ``reset()``."""
        self._core.disable(self._clock())
        self.dispatch_pending()

    def reset(self) -> None:
        """Back to a fresh CLOSED circuit, counters cleared."""
        self._core.reset(self._clock())
        self.dispatch_pending()

    def add_listener(self, listener: object) -> None:
        """Add an object with any of ``on_state_change``, ``on_success``,
        ``on_failure``, ``on_rejected`` (see ``CircuitBreakerListener``)."""
        self._listeners.add(listener)
        self._update_plain()

    def remove_listener(self, listener: object) -> None:
        self._listeners.remove(listener)
        self._update_plain()

    def attach_gate(self, gate: CircuitGate | None) -> None:
        """Share this circuit's state through ``gate`` (None: local only)."""
        self._gate = gate
        self._core.probe_gated = gate is not None

    @property
    def gate(self) -> CircuitGate | None:
        return self._gate

    @property
    def core(self) -> CircuitCore:
        """The state machine (for the shared-state layer and tests)."""
        return self._core

    @property
    def clock(self) -> Clock:
        return self._clock


def _matches(predicate: Callable[[BaseException], bool], exc: BaseException) -> bool:
    try:
        return bool(predicate(exc))
    except Exception:
        log.exception("exception predicate %r failed", predicate)
        return False


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
