"""Trying to break the local state machine of docs/breakers.md: thresholds,
windows, slow calls, half-open, operator actions, what counts, health.

Every test drives the breaker with a ManualClock: nothing sleeps.
"""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from pgresilience import PgResilienceError
from pgresilience.breakers import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ManualClock,
    Transition,
)

from .conftest import Boom, ok


class Recorder:
    """A listener keeping every transition."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def on_state_change(self, breaker: CircuitBreaker, transition: Transition) -> None:
        self.transitions.append(transition)


def fail(exc: BaseException | None = None) -> Any:
    raise exc if exc is not None else Boom("down")


def failures(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            breaker.execute(fail)


def trip(breaker: CircuitBreaker) -> None:
    failures(breaker, breaker.config.failure_threshold or 1)
    assert breaker.state is CircuitState.OPEN


# -- consecutive failures ------------------------------------------------------


def test_a_success_between_failures_restarts_the_consecutive_count(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=3)
    for _ in range(5):
        failures(breaker, 2)
        breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED
    failures(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    failures(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failures == 13


def test_failure_threshold_none_never_trips_on_consecutive_failures(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=None)
    failures(breaker, 500)
    assert breaker.state is CircuitState.CLOSED


# -- failure-rate windows ------------------------------------------------------


def test_rate_is_evaluated_on_a_success_fffss(clock: ManualClock) -> None:
    """The documented example: window 5, minimum 5, 50%: F F F S S opens on
    the second S (60%)."""
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_size=5,
        minimum_calls=5,
    )
    failures(breaker, 3)
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED
    breaker.execute(ok)
    assert breaker.state is CircuitState.OPEN


def test_rate_as_percent_equals_rate_as_fraction(clock: ManualClock) -> None:
    for threshold in (0.5, 50):
        breaker = CircuitBreaker(
            "c",
            clock=clock,
            failure_threshold=None,
            failure_rate_threshold=threshold,
            window_size=4,
            minimum_calls=4,
        )
        breaker.execute(ok)
        breaker.execute(ok)
        failures(breaker, 1)
        assert breaker.state is CircuitState.CLOSED
        failures(breaker, 1)  # 2 of 4: 50% reaches the threshold
        assert breaker.state is CircuitState.OPEN, threshold


def test_rate_below_minimum_calls_never_trips(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_size=100,
        minimum_calls=10,
    )
    failures(breaker, 9)
    assert breaker.state is CircuitState.CLOSED
    failures(breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_minimum_calls_is_capped_at_a_count_window(clock: ManualClock) -> None:
    """minimum_calls 10 over a 4-call window: the window can never hold 10,
    so the docs cap the minimum at 4."""
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=1.0,
        window_size=4,
        minimum_calls=10,
    )
    failures(breaker, 4)
    assert breaker.state is CircuitState.OPEN


def test_count_window_forgets_calls_older_than_its_size(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_size=10,
        minimum_calls=10,
    )
    failures(breaker, 4)
    for _ in range(100):
        breaker.execute(ok)
    assert breaker.metrics.failure_rate == 0.0
    assert breaker.metrics.window_calls == 10
    failures(breaker, 4)  # 4 of the last 10
    assert breaker.state is CircuitState.CLOSED
    failures(breaker, 1)  # 5 of the last 10
    assert breaker.state is CircuitState.OPEN


def test_time_window_forgets_calls_older_than_its_seconds(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_type="time",
        window_size=10,
        minimum_calls=4,
    )
    failures(breaker, 3)
    clock.advance(25)  # those failures are long gone
    breaker.execute(ok)
    breaker.execute(ok)
    breaker.execute(ok)
    failures(breaker, 1)  # 1 of 4 in the window: 25%
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.window_calls == 4
    assert breaker.metrics.failure_rate == pytest.approx(0.25)


def test_time_window_counts_calls_within_its_seconds(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_type="time",
        window_size=10,
        minimum_calls=4,
    )
    for _ in range(2):
        failures(breaker, 1)
        clock.advance(2)
        breaker.execute(ok)
        clock.advance(2)
    assert breaker.state is CircuitState.OPEN  # 2 of 4 within 8 s


# -- slow calls ----------------------------------------------------------------


def slow(clock: ManualClock, seconds: float) -> Any:
    def call() -> str:
        clock.advance(seconds)
        return "late"

    return call


def test_slow_successes_open_the_circuit_by_slow_call_rate(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        slow_call_duration=1.0,
        window_size=4,
        minimum_calls=4,
    )
    for _ in range(3):
        assert breaker.execute(slow(clock, 2.0)) == "late"
    assert breaker.state is CircuitState.CLOSED
    breaker.execute(slow(clock, 1.0))  # "from" 1 s: exactly 1.0 is slow
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.slow_calls == 4


def test_slow_success_is_a_failed_trial(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=1, slow_call_duration=1.0, timeout=10
    )
    trip(breaker)
    clock.advance(10)
    assert breaker.execute(slow(clock, 5.0)) == "late"  # the caller still gets its answer
    assert breaker.state is CircuitState.OPEN


# -- OPEN, timeout, HALF_OPEN --------------------------------------------------


def test_open_rejects_until_timeout_then_half_opens_lazily(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=2, timeout=30)
    trip(breaker)
    clock.advance(29.5)
    with pytest.raises(CircuitOpenError) as info:
        breaker.execute(ok)
    assert info.value.retry_after == pytest.approx(0.5)
    assert isinstance(info.value, PgResilienceError)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.5)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_half_open_admits_exactly_the_permitted_trials(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=1,
        timeout=5,
        half_open_max_calls=2,
        success_threshold=3,
    )
    trip(breaker)
    clock.advance(5)
    results: list[str] = []

    def nested_trial() -> str:
        # While both trial slots are taken, a third call is rejected with 0.0.
        with pytest.raises(CircuitOpenError) as info:
            breaker.execute(ok)
        assert info.value.retry_after == 0.0
        results.append("inner rejected")
        return "ok"

    with breaker:  # first slot, held across the block
        breaker.execute(nested_trial)  # second slot
    assert results == ["inner rejected"]
    assert breaker.state is CircuitState.HALF_OPEN  # 2 successes of 3
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED


def test_any_failed_trial_reopens_even_after_successes(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=5, success_threshold=3)
    trip(breaker)
    clock.advance(5)
    breaker.execute(ok)
    breaker.execute(ok)
    failures(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(5)


def test_backoff_multiplies_reopens_from_half_open_up_to_the_cap(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=1, timeout=10, backoff_factor=2.0, max_timeout=25
    )
    trip(breaker)
    assert breaker.retry_after == pytest.approx(10)
    clock.advance(10)
    failures(breaker, 1)
    assert breaker.retry_after == pytest.approx(20)
    clock.advance(20)
    failures(breaker, 1)
    assert breaker.retry_after == pytest.approx(25)
    clock.advance(25)
    breaker.execute(ok)  # closes: the next trip starts from timeout again
    trip(breaker)
    assert breaker.retry_after == pytest.approx(10)


def test_max_wait_in_half_open_reopens_and_late_outcome_counts_once(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=1, timeout=5, max_wait_in_half_open=30
    )
    trip(breaker)
    clock.advance(5)
    calls_before = breaker.metrics.calls
    with breaker:  # the hung trial
        clock.advance(31)
        assert breaker.state is CircuitState.OPEN  # re-opened lazily on the read
        clock.advance(5)
        assert breaker.state is CircuitState.HALF_OPEN  # a fresh episode
        assert breaker.execute(ok) == "ok"  # its slot is free: the hung one's was released
        assert breaker.state is CircuitState.CLOSED
    # The hung trial's late success is counted once, and changes nothing.
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.calls == calls_before + 2
    assert breaker.metrics.successes == 2


def test_late_failure_of_a_stale_permit_does_not_reopen(clock: ManualClock) -> None:
    """A call admitted while CLOSED that fails after the circuit closed again
    (a new epoch) updates the lifetime counters only."""
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=5)

    with pytest.raises(Boom):
        with breaker:  # admitted while CLOSED ...
            breaker.open()  # ... an operator opens
            clock.advance(5)
            breaker.execute(ok)  # a trial closes it
            assert breaker.state is CircuitState.CLOSED
            raise Boom("late")  # ... the old call fails late
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failures == 1


# -- what counts ---------------------------------------------------------------


def test_other_exceptions_are_successes_and_restart_the_count(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=2, record_exceptions=(ConnectionError,)
    )
    with pytest.raises(ConnectionError):
        breaker.execute(fail, ConnectionError())
    with pytest.raises(KeyError):
        breaker.execute(fail, KeyError("x"))
    with pytest.raises(ConnectionError):
        breaker.execute(fail, ConnectionError())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.successes == 1
    assert breaker.metrics.failures == 2


def test_ignored_wins_over_recorded_and_is_never_swallowed_by_a_fallback(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=1,
        record_exceptions=(OSError,),
        ignore_exceptions=(lambda e: isinstance(e, OSError) and "ignore" in str(e),),
    )
    with pytest.raises(OSError):
        breaker.execute(fail, OSError("ignore me"), fallback=lambda: "cached")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.ignored == 1
    assert breaker.execute(fail, OSError("count me"), fallback=lambda: "cached") == "cached"
    assert breaker.state is CircuitState.OPEN


def test_base_exceptions_count_as_nothing(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1)
    with pytest.raises(KeyboardInterrupt):
        breaker.execute(fail, KeyboardInterrupt())
    with pytest.raises(SystemExit):
        breaker.execute(fail, SystemExit(3))
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failures == 0
    assert breaker.metrics.successes == 0


def test_record_result_makes_a_value_a_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=2, record_result=lambda value: value is None
    )
    assert breaker.execute(lambda: None) is None
    assert breaker.execute(lambda: None, fallback=lambda: "cached") == "cached"
    assert breaker.state is CircuitState.OPEN


# -- retry hints ---------------------------------------------------------------


class RateLimited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429 Too Many Requests")
        self.headers = headers


def test_retry_after_header_in_seconds_opens_below_the_threshold(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=5, timeout=10)
    with pytest.raises(RateLimited):
        breaker.execute(fail, RateLimited({"Retry-After": "120"}))
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(120)


def test_retry_after_header_is_case_insensitive(clock: ManualClock) -> None:
    """HTTP header names are case-insensitive; clients (requests, httpx)
    expose them through case-insensitive mappings, but a plain dict of a
    lower-cased HTTP/2 response holds ``retry-after``."""
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=5, timeout=10)
    with pytest.raises(RateLimited):
        breaker.execute(fail, RateLimited({"retry-after": "120"}))
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(120)


def test_retry_after_http_date_and_cap(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=5, max_retry_after=600)
    far = email.utils.formatdate(2_000_000_000, usegmt=True)  # years from now
    with pytest.raises(RateLimited):
        breaker.execute(fail, RateLimited({"Retry-After": far}))
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(600)


def test_a_trip_stays_open_for_the_longer_of_timeout_and_hint(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=100)
    with pytest.raises(RateLimited):
        breaker.execute(fail, RateLimited({"Retry-After": "3"}))
    assert breaker.retry_after == pytest.approx(100)


# -- operator actions and special states ----------------------------------------


def test_forced_open_rejects_with_no_retry_until_reset(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, timeout=1)
    breaker.force_open()
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as info:
        breaker.execute(ok)
    assert info.value.retry_after is None
    assert breaker.execute(ok, fallback=lambda: "cached") == "cached"
    assert breaker.health()["healthy"] is False
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.execute(ok) == "ok"


def test_disabled_passes_everything_and_records_nothing(clock: ManualClock) -> None:
    recorder = Recorder()
    heard: list[str] = []

    class Calls:
        def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
            heard.append("success")

        def on_failure(self, breaker: CircuitBreaker, error: BaseException, d: float) -> None:
            heard.append("failure")

    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, listeners=[recorder, Calls()])
    trip(breaker)
    heard.clear()
    before = breaker.metrics
    breaker.disable()
    failures(breaker, 20)
    assert breaker.execute(fail, Boom(), fallback=lambda: "cached") == "cached"
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.DISABLED
    after = breaker.metrics
    assert (after.calls, after.failures, after.successes) == (
        before.calls,
        before.failures,
        before.successes,
    )
    assert heard == []


def test_a_call_admitted_before_disable_is_not_counted(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1)
    with pytest.raises(Boom):
        with breaker:
            breaker.disable()
            raise Boom("late")
    assert breaker.metrics.failures == 0
    assert breaker.state is CircuitState.DISABLED


def test_metrics_only_never_rejects_and_says_when_it_would_have_opened(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=2)
    breaker.metrics_only()
    failures(breaker, 10)
    assert breaker.state is CircuitState.METRICS_ONLY
    assert breaker.metrics.failures == 10
    assert breaker.execute(ok) == "ok"
    health = breaker.health()
    assert health["healthy"] is True
    assert "would have opened" in health["message"]


def test_open_on_open_only_moves_the_deadline(clock: ManualClock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=1, timeout=60, listeners=[recorder]
    )
    trip(breaker)
    breaker.open(5)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(5)
    clock.advance(5)
    assert breaker.state is CircuitState.HALF_OPEN


def test_manual_half_open_episode_is_manual_to_its_end(clock: ManualClock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker("c", clock=clock, listeners=[recorder])
    breaker.half_open()
    breaker.half_open()  # a no-op in HALF_OPEN
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED
    assert [(t.old, t.new, t.manual) for t in recorder.transitions] == [
        (CircuitState.CLOSED, CircuitState.HALF_OPEN, True),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED, True),
    ]


def test_operator_open_then_trial_is_not_manual(clock: ManualClock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker("c", clock=clock, timeout=7, listeners=[recorder])
    breaker.open()
    assert breaker.retry_after == pytest.approx(7)
    clock.advance(7)
    breaker.execute(ok)
    manual = [(t.new, t.manual) for t in recorder.transitions]
    assert manual[0] == (CircuitState.OPEN, True)
    assert breaker.state is CircuitState.CLOSED


def test_reset_clears_counters_and_last_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=3)
    failures(breaker, 2)
    assert breaker.health()["last_failure"]["error"] == "Boom: down"
    breaker.reset()
    assert breaker.health()["last_failure"] is None
    assert breaker.metrics.failures == 0
    failures(breaker, 2)  # the consecutive count restarted
    assert breaker.state is CircuitState.CLOSED


# -- health ----------------------------------------------------------------------


def test_health_of_an_open_circuit_says_when_it_will_retry(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=60)
    with pytest.raises(ConnectionError):
        breaker.execute(fail, ConnectionError("503 Service Unavailable"))
    clock.advance(18.75)
    health = breaker.health()
    assert set(health) == {"healthy", "state", "failure_rate", "message", "last_failure"}
    assert health["healthy"] is False
    assert health["state"] == "open"
    assert health["message"] == "Circuit open - retry in 41250ms"
    assert health["last_failure"]["error"] == "ConnectionError: 503 Service Unavailable"
    assert health["last_failure"]["at"].endswith("+00:00")
    error = pytest.raises(CircuitOpenError, breaker.execute, ok).value
    assert "41250ms" in str(error)


# -- stale permits of operator actions -------------------------------------------


def test_a_call_in_flight_across_reset_does_not_count_in_the_new_circuit(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1)
    with pytest.raises(Boom):
        with breaker:
            breaker.reset()  # a fresh circuit; this call belongs to the old one
            raise Boom("late")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.consecutive_failures == 0


def test_a_trial_in_flight_across_an_operator_open_does_not_close(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=10)
    trip(breaker)
    clock.advance(10)
    with breaker:  # the trial
        breaker.open(100)
    assert breaker.state is CircuitState.OPEN  # its late success was stale
    assert breaker.retry_after == pytest.approx(100)


def test_a_failed_trial_with_a_hint_stays_open_for_the_longer(clock: ManualClock) -> None:
    breaker = CircuitBreaker("c", clock=clock, failure_threshold=1, timeout=10, backoff_factor=2)
    trip(breaker)
    clock.advance(10)
    with pytest.raises(RateLimited):
        breaker.execute(fail, RateLimited({"Retry-After": "300"}))
    assert breaker.retry_after == pytest.approx(300)
    clock.advance(300)
    failures(breaker, 1)  # backoff went on counting: 10 * 2 * 2
    assert breaker.retry_after == pytest.approx(40)


def test_a_slow_failure_is_one_failure_and_one_slow_call(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c", clock=clock, failure_threshold=None, slow_call_duration=1.0, window_size=10
    )

    def slow_fail() -> None:
        clock.advance(2)
        raise Boom("slow and failed")

    with pytest.raises(Boom):
        breaker.execute(slow_fail)
    m = breaker.metrics
    assert (m.calls, m.failures, m.slow_calls, m.successes) == (1, 1, 1, 0)


def test_metrics_only_reports_the_rate_it_would_have_opened_on(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "c",
        clock=clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )
    breaker.metrics_only()
    failures(breaker, 2)
    breaker.execute(ok)
    assert "would have opened" not in breaker.health()["message"]
    breaker.execute(ok)  # 2 of 4: 50%
    assert "would have opened" in breaker.health()["message"]
    assert breaker.state is CircuitState.METRICS_ONLY
