"""What a breaker counts and when it trips: ``CircuitBreakerConfig``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import email.utils
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeAlias

__all__ = [
    "CircuitBreakerConfig",
    "ExceptionMatcher",
    "Outcome",
    "retry_after_from_error",
]

#: An exception type (subclasses match too) or a predicate on the exception.
ExceptionMatcher: TypeAlias = type[BaseException] | Callable[[BaseException], bool]

WindowType: TypeAlias = Literal["count", "time"]


class Outcome:
    """How a finished call is classified (plain ints: the hot path compares them)."""

    SUCCESS = 0
    FAILURE = 1
    #: Neither success nor failure: ignored exceptions and cancellation.
    IGNORED = 2


def _rate(name: str, value: float | None) -> float | None:
    """Rates are fractions (0.5); values above 1 are read as percentages (50)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value > 1:
        value = value / 100.0
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1] or a percentage in (1, 100]")
    return float(value)


def _matchers(name: str, value: Any) -> tuple[ExceptionMatcher, ...]:
    items: Iterable[Any] = (value,) if isinstance(value, type) or not _iterable(value) else value
    result = tuple(items)
    for item in result:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                raise TypeError(f"{name}: {item!r} is not an exception type")
        elif not callable(item):
            raise TypeError(f"{name}: {item!r} is neither an exception type nor a predicate")
    return result


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _count(name: str, value: int | None, *, minimum: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def retry_after_from_error(exc: BaseException) -> float | None:
    """Seconds the failed service asked us to wait, if the error says so.

    Understands an attribute ``retry_after`` (seconds, a ``timedelta`` or an
    aware ``datetime``) and a ``Retry-After`` header (delta-seconds or an
    HTTP date) on ``exc.headers`` or ``exc.response.headers`` (urllib,
    requests, httpx and most AI SDKs raise errors shaped like that).
    """
    hint: Any = getattr(exc, "retry_after", None)
    if hint is None:
        for holder in (exc, getattr(exc, "response", None)):
            headers = getattr(holder, "headers", None)
            if headers is not None and hasattr(headers, "get"):
                try:
                    hint = headers.get("Retry-After") or headers.get("retry-after")
                except Exception:  # a foreign mapping that misbehaves gives no hint
                    hint = None
                if hint is not None:
                    break
    return _seconds(hint)


def _seconds(hint: Any) -> float | None:
    if hint is None or isinstance(hint, bool):
        return None
    if isinstance(hint, int | float):
        seconds = float(hint)
    elif isinstance(hint, _dt.timedelta):
        seconds = hint.total_seconds()
    elif isinstance(hint, _dt.datetime):
        if hint.tzinfo is None:
            return None
        seconds = (hint - _dt.datetime.now(_dt.UTC)).total_seconds()
    elif isinstance(hint, str | bytes):
        text = hint.decode("latin-1") if isinstance(hint, bytes) else hint
        text = text.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                return None
            seconds = (when - _dt.datetime.now(_dt.UTC)).total_seconds()
    else:
        return None
    if math.isnan(seconds) or seconds <= 0:
        return None
    return seconds


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerConfig:
    """Every knob of a breaker. Durations are in seconds.

    Trips from CLOSED to OPEN when ``failure_threshold`` failures happen in a
    row, or when, over the sliding window holding at least ``minimum_calls``
    calls, the failure rate reaches ``failure_rate_threshold`` or the rate of
    calls slower than ``slow_call_duration`` reaches
    ``slow_call_rate_threshold``. Rates are fractions (``0.5``); a value above
    1 is read as a percentage (``50``).
    """

    #: Consecutive failures that open the circuit; ``None`` turns the rule off.
    failure_threshold: int | None = 5
    #: Failure rate over the window that opens the circuit; ``None``: off.
    failure_rate_threshold: float | None = None
    #: ``"count"``: the last ``window_size`` calls; ``"time"``: the calls of
    #: the last ``window_size`` seconds.
    window_type: WindowType = "count"
    window_size: float = 100
    #: Calls the window must hold before any rate rule applies.
    minimum_calls: int = 10
    #: A call that takes at least this long is slow (``None``: never).
    slow_call_duration: float | None = None
    #: Slow-call rate that opens the circuit (default 1.0 once
    #: ``slow_call_duration`` is set).
    slow_call_rate_threshold: float | None = None
    #: Seconds the circuit stays OPEN before admitting trial calls.
    timeout: float = 60.0
    #: Each re-open straight from HALF_OPEN multiplies the open time by this
    #: (1.0: no backoff), up to ``max_timeout`` (default: ten times ``timeout``).
    backoff_factor: float = 1.0
    max_timeout: float | None = None
    #: Trial calls admitted at once in HALF_OPEN (threads and tasks alike).
    half_open_max_calls: int = 1
    #: Successful trial calls that close the circuit again.
    success_threshold: int = 1
    #: A HALF_OPEN episode whose trial calls are still running after this
    #: many seconds re-opens the circuit as if a trial had failed, freeing
    #: the slots a hung trial holds (resilience4j's
    #: ``maxWaitDurationInHalfOpenState``). ``None``: wait for the trials.
    max_wait_in_half_open: float | None = None
    #: Exceptions that count as failures (types or predicates). Other
    #: ``Exception``\ s count as successes: the service did answer.
    record_exceptions: tuple[ExceptionMatcher, ...] = (Exception,)
    #: Exceptions that count as neither success nor failure; wins over
    #: ``record_exceptions``. Cancellation (``asyncio.CancelledError``,
    #: ``KeyboardInterrupt``, any non-``Exception``) is always ignored.
    ignore_exceptions: tuple[ExceptionMatcher, ...] = ()
    #: ``record_result(value) -> True`` makes a returned value a failure.
    record_result: Callable[[Any], bool] | None = None
    #: Extracts "retry after N seconds" from a recorded failure (an HTTP 429
    #: with Retry-After); the circuit then opens at once and stays open until
    #: then (at most ``max_retry_after`` seconds). ``None`` turns this off.
    retry_after: Callable[[BaseException], float | None] | None = retry_after_from_error
    max_retry_after: float = 3600.0
    #: Async calls only: a call running longer is cancelled and is a failure
    #: (``TimeoutError``).
    call_timeout: float | None = None

    def __post_init__(self) -> None:
        _count("failure_threshold", self.failure_threshold)
        object.__setattr__(
            self,
            "failure_rate_threshold",
            _rate("failure_rate_threshold", self.failure_rate_threshold),
        )
        if self.window_type not in ("count", "time"):
            raise ValueError(f"window_type must be 'count' or 'time', got {self.window_type!r}")
        if self.window_type == "count":
            _count("window_size", self.window_size)  # type: ignore[arg-type]
        else:
            _positive("window_size", self.window_size)
        _count("minimum_calls", self.minimum_calls)
        slow_rate = _rate("slow_call_rate_threshold", self.slow_call_rate_threshold)
        if self.slow_call_duration is not None:
            _positive("slow_call_duration", self.slow_call_duration)
            if slow_rate is None:
                slow_rate = 1.0
        object.__setattr__(self, "slow_call_rate_threshold", slow_rate)
        _positive("timeout", self.timeout, allow_zero=True)
        _positive("backoff_factor", self.backoff_factor)
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")
        if self.max_timeout is not None:
            _positive("max_timeout", self.max_timeout, allow_zero=True)
            if self.max_timeout < self.timeout:
                raise ValueError("max_timeout must be >= timeout")
        _count("half_open_max_calls", self.half_open_max_calls)
        _count("success_threshold", self.success_threshold)
        if self.max_wait_in_half_open is not None:
            _positive("max_wait_in_half_open", self.max_wait_in_half_open)
        object.__setattr__(
            self, "record_exceptions", _matchers("record_exceptions", self.record_exceptions)
        )
        object.__setattr__(
            self, "ignore_exceptions", _matchers("ignore_exceptions", self.ignore_exceptions)
        )
        if self.record_result is not None and not callable(self.record_result):
            raise TypeError("record_result must be callable")
        if self.retry_after is not None and not callable(self.retry_after):
            raise TypeError("retry_after must be callable")
        _positive("max_retry_after", self.max_retry_after, allow_zero=True)
        if self.call_timeout is not None:
            _positive("call_timeout", self.call_timeout)

    def replace(self, **changes: Any) -> CircuitBreakerConfig:
        return dataclasses.replace(self, **changes)

    def open_duration(self, consecutive_opens: int) -> float:
        """Seconds OPEN lasts the ``consecutive_opens``-th time in a row (1-based)."""
        if self.backoff_factor == 1 or consecutive_opens <= 1:
            return self.timeout
        try:
            duration = self.timeout * self.backoff_factor ** (consecutive_opens - 1)
        except OverflowError:
            duration = math.inf
        return min(duration, self.effective_max_timeout)

    @property
    def effective_max_timeout(self) -> float:
        """The backoff cap: ``max_timeout``, by default ten times ``timeout``."""
        return self.max_timeout if self.max_timeout is not None else self.timeout * 10

    @property
    def uses_window(self) -> bool:
        return self.failure_rate_threshold is not None or self.slow_call_duration is not None
