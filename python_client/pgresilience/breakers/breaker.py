"""``CircuitBreaker``: runs calls through the state machine, sync or async.

The hot path (CLOSED, call succeeds) reads the state without the lock (a
stale read is harmless, see ``core``), times the call, and takes the lock
once to record the outcome. No lock is ever held while the protected call
runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import functools
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast, overload

from .clock import Clock, monotonic
from .config import CircuitBreakerConfig, Outcome
from .core import PROBE_NEEDED, CircuitCore, Transition
from .errors import CircuitOpenError
from .listeners import ListenerSet
from .state import CircuitState

__all__ = ["CircuitBreaker", "CircuitGate", "CircuitMetrics"]

log = logging.getLogger("pgresilience.breakers")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
DISABLED = CircuitState.DISABLED
_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_IGNORED = Outcome.IGNORED


class CircuitGate(Protocol):
    """Where a breaker's state is shared (see ``breakers.shared``)."""

    #: Seconds a caller waits for a probe answer before deciding locally.
    request_timeout: float

    @property
    def available(self) -> bool:
        """Whether the shared state answered lately (False: deciding locally)."""

    def request_probe(self, breaker: CircuitBreaker) -> Future[bool] | None:
        """Ask to run the half-open trial, without blocking.

        None: decide locally now. Otherwise a future answering True (run
        the trial) or False (refused; the gate has moved the local deadline).
        """

    def on_transition(self, breaker: CircuitBreaker, transition: Transition) -> None:
        """This process made a transition; tell the others (must not block)."""

    def detach(self, breaker: CircuitBreaker) -> None:
        """Stop sharing this breaker's state (it goes on locally)."""


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
        "_plain_async",
        "_last_failure",
        "_entered",
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
        self._plain_async = False
        #: (wall-clock time, "Type: message") of the last recorded failure.
        self._last_failure: tuple[float, str] | None = None
        #: Permits of ``with breaker:`` blocks, innermost first, per thread/task.
        self._entered: contextvars.ContextVar[tuple[tuple[int, float], ...]] = (
            contextvars.ContextVar(f"pgresilience-breaker-{name}", default=())
        )
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
        state = core.state
        if state is not CLOSED or not self._plain:
            if state is OPEN:
                # Fail fast: an OPEN circuit before its deadline rejects
                # without the admission machinery (unlocked reads: a racing
                # transition only makes this rejection a little stale).
                wait = core.open_until - self._clock()
                if wait > 0.0 and not self._listeners.on_rejected:
                    core.count_rejection()
                    if fallback is not None:
                        return cast(T, fallback())
                    raise CircuitOpenError(self.name, OPEN, wait)
            return self._execute(fn, args, kwargs, fallback)
        # The hot path: CLOSED, nothing to time, nothing to inspect.
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if _misused(exc):
                self._abandoned(permit, 0.0)
                raise
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
            if _misused(exc):
                self._abandoned(permit, clock() - start)
                raise
            if self._failed(exc, permit, start) and fallback is not None:
                return cast(T, fallback())
            raise
        end = clock()
        if self._record_result is not None and self._is_bad_result(result):
            self._bad_result(permit, start, end)
            if fallback is not None:
                return cast(T, fallback())
            return result
        self._succeeded(permit, end, end - start)
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
        core = self._core
        permit = core.epoch
        if core.state is not CLOSED or not self._plain_async:
            return await self._execute_async(fn, args, kwargs, fallback)
        # The hot path, as in execute(): one coroutine frame, no clock.
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if _misused(exc):
                self._abandoned(permit, 0.0)
                raise
            if self._failed(exc, permit, None) and fallback is not None:
                return cast(T, await _maybe_await(fallback()))
            raise
        core.closed_success(permit)
        return result

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
            permit = await self._admit_async()
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
            if _misused(exc):
                self._abandoned(permit, clock() - start)
                raise
            if self._failed(exc, permit, start) and fallback is not None:
                return cast(T, await _maybe_await(fallback()))
            raise
        end = clock()
        if self._record_result is not None and self._is_bad_result(result):
            self._bad_result(permit, start, end)
            if fallback is not None:
                return cast(T, await _maybe_await(fallback()))
            return result
        self._succeeded(permit, end, end - start)
        return result

    # -- with / async with -------------------------------------------------------

    def __enter__(self) -> CircuitBreaker:
        """``with breaker:`` runs the block as one call (rejected: the block
        does not run and ``CircuitOpenError`` is raised)."""
        permit = self._admit(self._clock())
        if permit < 0:
            self._rejected(None)
        self._push(permit)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pop(exc)

    async def __aenter__(self) -> CircuitBreaker:
        """``async with breaker:``; the probe question, if any, is awaited
        (``call_timeout`` does not apply to a block)."""
        permit = await self._admit_async()
        if permit < 0:
            self._rejected(None)
        self._push(permit)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pop(exc)

    def _push(self, permit: int) -> None:
        self._entered.set(((permit, self._clock()), *self._entered.get()))

    def _pop(self, exc: BaseException | None) -> None:
        stack = self._entered.get()
        if not stack:
            raise RuntimeError(f"circuit {self.name!r}: exit without a matching enter")
        (permit, start), *rest = stack
        self._entered.set(tuple(rest))
        if exc is None:
            end = self._clock()
            self._succeeded(permit, end, end - start)
        else:
            self._failed(exc, permit, start)

    # -- decorator ------------------------------------------------------------------

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
        async function, or a sync or async generator function. The fallback
        receives the decorated function's arguments."""
        if fn is None:
            return lambda target: self._decorate(target, fallback)
        return self._decorate(fn, fallback)

    def _decorate(self, fn: F, fallback: Callable[..., Any] | None) -> F:
        if inspect.isasyncgenfunction(fn):
            return cast(F, self._decorate_async_generator(fn, fallback))
        if inspect.isgeneratorfunction(fn):
            return cast(F, self._decorate_generator(fn, fallback))
        if inspect.iscoroutinefunction(fn):
            core = self._core

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                permit = core.epoch
                if core.state is CLOSED and self._plain_async:
                    # The hot path, inlined: no second coroutine frame.
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException as exc:
                        if _misused(exc):
                            self._abandoned(permit, 0.0)
                            raise
                        if self._failed(exc, permit, None) and fallback is not None:
                            return await _maybe_await(fallback(*args, **kwargs))
                        raise
                    core.closed_success(permit)
                    return result
                bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
                return await self._execute_async(fn, args, kwargs, bound)

            return cast(F, async_wrapper)

        core = self._core

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = core.epoch
            state = core.state
            if state is CLOSED and self._plain:
                # The hot path of execute(), inlined.
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    if _misused(exc):
                        self._abandoned(permit, 0.0)
                        raise
                    if self._failed(exc, permit, None) and fallback is not None:
                        return fallback(*args, **kwargs)
                    raise
                core.closed_success(permit)
                return result
            if state is OPEN and fallback is None:
                # Fail fast, as in execute().
                wait = core.open_until - self._clock()
                if wait > 0.0 and not self._listeners.on_rejected:
                    core.count_rejection()
                    raise CircuitOpenError(self.name, OPEN, wait)
            bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
            return self._execute(fn, args, kwargs, bound)

        return cast(F, wrapper)

    def _decorate_generator(
        self, fn: Callable[..., Generator[Any, Any, Any]], fallback: Callable[..., Any] | None
    ) -> Callable[..., Generator[Any, Any, Any]]:
        """A stream is one call: admitted at its first item, a failure if it
        raises while iterating, a success once exhausted, neither when the
        consumer abandons it. Only time spent inside the generator counts
        towards ``slow_call_duration``. The fallback (an iterable) answers a
        rejection, or a failure before the first item."""

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
            permit = self._admit(self._clock())
            if permit < 0:
                return (yield from self._rejected(bound))
            clock = self._clock
            spent = 0.0
            yielded = False
            try:
                gen = fn(*args, **kwargs)
                step: Callable[[], Any] = gen.__next__
            except BaseException as exc:
                if self._failure(exc, permit, 0.0) and bound is not None:
                    return (yield from bound())
                raise
            while True:
                begun = clock()
                try:
                    item = step()
                except StopIteration as stop:
                    spent += clock() - begun
                    self._succeeded(permit, clock(), spent)
                    return stop.value
                except BaseException as exc:
                    spent += clock() - begun
                    if self._failure(exc, permit, spent) and bound is not None and not yielded:
                        return (yield from bound())
                    raise
                spent += clock() - begun
                yielded = True
                try:
                    sent = yield item
                except GeneratorExit:
                    self._abandoned(permit, spent)
                    gen.close()
                    raise
                except BaseException as thrown:
                    step = functools.partial(gen.throw, thrown)
                else:
                    step = gen.__next__ if sent is None else functools.partial(gen.send, sent)

        return gen_wrapper

    def _decorate_async_generator(
        self, fn: Callable[..., AsyncGenerator[Any, Any]], fallback: Callable[..., Any] | None
    ) -> Callable[..., AsyncGenerator[Any, Any]]:
        """As ``_decorate_generator``, for ``async def ... yield``;
        ``call_timeout`` bounds the wait for each item."""
        timeout = self.config.call_timeout

        @functools.wraps(fn)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            bound = None if fallback is None else functools.partial(fallback, *args, **kwargs)
            permit = await self._admit_async()
            if permit < 0:
                async for item in _aiter_any(self._rejected(bound)):
                    yield item
                return
            clock = self._clock
            spent = 0.0
            yielded = False
            try:
                agen = fn(*args, **kwargs)
                step: Callable[[], Awaitable[Any]] = agen.__anext__
            except BaseException as exc:
                if self._failure(exc, permit, 0.0) and bound is not None:
                    async for item in _aiter_any(bound()):
                        yield item
                    return
                raise
            while True:
                begun = clock()
                try:
                    if timeout is None:
                        item = await step()
                    else:
                        async with asyncio.timeout(timeout):
                            item = await step()
                except StopAsyncIteration:
                    spent += clock() - begun
                    self._succeeded(permit, clock(), spent)
                    return
                except BaseException as exc:
                    spent += clock() - begun
                    if self._failure(exc, permit, spent) and bound is not None and not yielded:
                        async for item in _aiter_any(bound()):
                            yield item
                        return
                    raise
                spent += clock() - begun
                yielded = True
                try:
                    sent = yield item
                except GeneratorExit:
                    self._abandoned(permit, spent)
                    await agen.aclose()
                    raise
                except BaseException as thrown:
                    step = functools.partial(agen.athrow, thrown)
                else:
                    step = agen.__anext__ if sent is None else functools.partial(agen.asend, sent)

        return agen_wrapper

    # -- slow paths ----------------------------------------------------------

    def _admit(self, now: float) -> int:
        """A permit for a call starting now (the probe question, if due, is
        asked here and waited for at most the gate's request_timeout)."""
        core = self._core
        permit = core.acquire(now)
        if permit == PROBE_NEEDED:
            permit = self._probe()
        if core.pending:
            self.dispatch_pending()
        return permit

    async def _admit_async(self) -> int:
        core = self._core
        permit = core.epoch
        if core.state is not CLOSED:
            permit = core.acquire(self._clock())
            if permit == PROBE_NEEDED:
                permit = await self._probe_async()
            if core.pending:
                self.dispatch_pending()
        return permit

    def _probe(self) -> int:
        """This caller holds the one probe question: ask the gate, wait at
        most its request_timeout; no answer means decide locally."""
        gate = self._gate
        granted = True
        try:
            answer = None if gate is None else gate.request_probe(self)
            if answer is not None and gate is not None:
                try:
                    granted = answer.result(gate.request_timeout)
                except Exception:  # no answer in time, or the store is away
                    answer.cancel()  # a question not yet sent is not sent late
                    granted = True
        except BaseException:
            self._core.finish_probe(self._clock(), False)
            raise
        return self._core.finish_probe(self._clock(), granted)

    async def _probe_async(self) -> int:
        """As ``_probe``, awaiting the answer on the event loop (never the
        default executor: a hung database must not fill its threads)."""
        gate = self._gate
        granted = True
        try:
            answer = None if gate is None else gate.request_probe(self)
            if answer is not None and gate is not None:
                try:
                    granted = await _answer(answer, gate.request_timeout)
                except Exception:  # TimeoutError, or the store is away
                    granted = True
        except BaseException:
            self._core.finish_probe(self._clock(), False)
            raise
        return self._core.finish_probe(self._clock(), granted)

    def _rejected(self, fallback: Callable[[], Any] | None) -> Any:
        if self._listeners.on_rejected:
            ListenerSet.fire(self._listeners.on_rejected, self)
        if fallback is not None:
            return fallback()
        core = self._core
        # Unlocked reads: a rejection is advice, a racing transition only
        # makes retry_after a little stale.
        state = core.state
        if state is CircuitState.OPEN:
            retry_after: float | None = core.open_until - self._clock()
            if retry_after < 0.0:  # type: ignore[operator]
                retry_after = 0.0
        elif state is CircuitState.FORCED_OPEN:
            retry_after = None
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
            and not config.uses_window
            and config.record_result is None
            and not self._listeners.on_success
            and not self._listeners.on_failure
        )
        self._plain_async = self._plain and config.call_timeout is None

    def _succeeded(self, permit: int, end: float, duration: float) -> None:
        core = self._core
        if not core.record(permit, end, duration, _SUCCESS):
            return
        if core.pending:
            self.dispatch_pending()
        if self._listeners.on_success:
            ListenerSet.fire(self._listeners.on_success, self, duration)

    def _abandoned(self, permit: int, duration: float) -> None:
        """A stream the consumer dropped: neither success nor failure (a
        half-open slot it held is given back)."""
        core = self._core
        core.record(permit, self._clock(), duration, _IGNORED)
        if core.pending:
            self.dispatch_pending()

    def _failed(self, exc: BaseException, permit: int, start: float | None) -> bool:
        """Record a raised call; True when it counts as a failure (whether or
        not anything was recorded: a DISABLED breaker still falls back)."""
        if start is None:
            return self._failure(exc, permit, 0.0)  # untimed hot path
        return self._failure(exc, permit, self._clock() - start)

    def _failure(self, exc: BaseException, permit: int, duration: float) -> bool:
        end = self._clock()
        outcome = self._classify(exc)
        hint = None
        if outcome == _FAILURE and self._retry_after is not None:
            try:
                hint = self._retry_after(exc)
            except Exception:
                log.exception("retry_after hint extractor failed")
        core = self._core
        if not core.record(permit, end, duration, outcome, hint):
            return outcome == _FAILURE
        if core.pending:
            self.dispatch_pending()
        listeners = self._listeners
        if outcome == _FAILURE:
            self._last_failure = (time.time(), f"{type(exc).__name__}: {exc}"[:500])
            if listeners.on_failure:
                ListenerSet.fire(listeners.on_failure, self, exc, duration)
            return True
        if outcome == _SUCCESS and listeners.on_success:
            ListenerSet.fire(listeners.on_success, self, duration)
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
        if not core.record(permit, end, end - start, _FAILURE):
            return
        self._last_failure = (time.time(), "bad result (record_result)")
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

    @property
    def last_failure(self) -> dict[str, str] | None:
        """``{"at": ISO time (UTC), "error": "Type: message"}`` of the last
        recorded failure, or None."""
        last = self._last_failure
        if last is None:
            return None
        at = _dt.datetime.fromtimestamp(last[0], _dt.UTC).isoformat(timespec="milliseconds")
        return {"at": at, "error": last[1]}

    def health(self) -> dict[str, Any]:
        """``{"healthy", "state", "failure_rate", "message", "last_failure"}``
        for dashboards, plus ``"shared_store"`` (``"available"`` /
        ``"unavailable"``) for a shared breaker."""
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
        elif state is CircuitState.METRICS_ONLY:
            would = self._core.would_open
            message = "Circuit metrics only - never rejects" + (
                f"; would have opened: {would}" if would else ""
            )
        else:
            message = "Circuit closed"
        report: dict[str, Any] = {
            "healthy": state is CLOSED or state is DISABLED or state is CircuitState.METRICS_ONLY,
            "state": state.value,
            "failure_rate": metrics.failure_rate,
            "message": message,
            "last_failure": self.last_failure,
        }
        gate = self._gate
        if gate is not None:
            available = gate.available
            report["shared_store"] = "available" if available else "unavailable"
            if not available:
                report["message"] = (
                    f"{message} (shared state unavailable: the database does not answer; "
                    "deciding locally)"
                )
        return report

    def open(self, duration: float | None = None) -> None:
        """Open the circuit now for ``duration`` seconds (None: the configured
        open time); trial calls follow as after a trip. On an OPEN circuit
        this only sets the new deadline (locally: no transition to publish)."""
        if duration is not None and not duration >= 0:
            raise ValueError(f"duration must be >= 0, got {duration!r}")
        self._core.open(self._clock(), duration)
        self.dispatch_pending()

    def half_open(self) -> None:
        """Start a half-open episode now: the next trial calls decide."""
        self._core.half_open(self._clock())
        self.dispatch_pending()

    def force_open(self) -> None:
        """Reject every call until ``reset()``."""
        self._core.force_open(self._clock())
        self.dispatch_pending()

    def disable(self) -> None:
        """Let every call through and record nothing until ``reset()``."""
        self._core.disable(self._clock())
        self.dispatch_pending()

    def metrics_only(self) -> None:
        """Let every call through, keep recording and reporting (health says
        when the circuit would have opened), never reject, until ``reset()``."""
        self._core.metrics_only(self._clock())
        self.dispatch_pending()

    def reset(self) -> None:
        """Back to a fresh CLOSED circuit, counters cleared."""
        self._core.reset(self._clock())
        self._last_failure = None
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


def _misused(exc: BaseException) -> bool:
    """A TypeError raised by the call or the await expression itself, in the
    breaker's own frame (wrong arguments; execute_async given a function
    whose result cannot be awaited): the caller's bug, not the service's
    answer. Neither recorded nor answered by a fallback. Looked at only once
    a call has raised: the hot path pays nothing."""
    tb = exc.__traceback__
    return type(exc) is TypeError and tb is not None and tb.tb_next is None


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


async def _answer(answer: Future[bool], timeout: float) -> bool:
    """Await a gate's answer on the running loop, at most ``timeout`` seconds.

    The store's thread hands the result over with ``call_soon_threadsafe``
    (no executor involved); an answer that comes after the loop has closed
    is dropped quietly, and a question not yet sent is withdrawn.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()

    def copy(done: Future[bool]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
        elif (error := done.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    def relay(done: Future[bool]) -> None:
        try:
            loop.call_soon_threadsafe(copy, done)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    answer.add_done_callback(relay)
    try:
        async with asyncio.timeout(timeout):
            return await waiter
    finally:
        answer.cancel()


async def _aiter_any(items: Any) -> AsyncIterator[Any]:
    """Items of an async or a plain iterable (a fallback may return either)."""
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
