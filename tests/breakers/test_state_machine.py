"""The in-process circuit breaker, driven by a manual clock: nothing here
sleeps to wait out a timeout."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import pytest

from pgresilience.breakers import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ManualClock,
)

from .helpers import Boom, Recorder, fail, make, ok, trip

# -- tripping on consecutive failures --------------------------------------------


def test_a_new_breaker_is_closed_and_passes_calls_through() -> None:
    breaker, _ = make()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.execute(ok) == "ok"
    assert breaker.execute(lambda a, b=0: a + b, 1, b=2) == 3


def test_opens_after_failure_threshold_consecutive_failures() -> None:
    breaker, _ = make(failure_threshold=3)
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_default_threshold_is_five_and_default_timeout_sixty_seconds() -> None:
    breaker, clock = make()
    trip(breaker, 4)
    assert breaker.state is CircuitState.CLOSED
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    clock.advance(59.9)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN


def test_a_success_resets_the_failure_streak() -> None:
    breaker, _ = make(failure_threshold=3)
    trip(breaker, 2)
    breaker.execute(ok)
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_an_open_circuit_rejects_without_calling_and_says_when_to_retry() -> None:
    breaker, clock = make(failure_threshold=1, timeout=30.0)
    trip(breaker, 1)
    clock.advance(10)
    called = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.execute(lambda: called.append(1))
    assert called == []
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.state is CircuitState.OPEN
    assert info.value.name == "test"
    assert breaker.metrics.rejections == 1


# -- half-open ---------------------------------------------------------------------


def test_after_the_timeout_one_trial_success_closes_the_circuit() -> None:
    breaker, clock = make(failure_threshold=1, timeout=10.0)
    trip(breaker, 1)
    clock.advance(10)
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_a_failed_trial_reopens_for_another_full_timeout() -> None:
    breaker, clock = make(failure_threshold=1, timeout=10.0)
    trip(breaker, 1)
    clock.advance(10)
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(10.0)


def test_success_threshold_trials_are_needed_to_close() -> None:
    breaker, clock = make(failure_threshold=1, timeout=5.0, success_threshold=3)
    trip(breaker, 1)
    clock.advance(5)
    breaker.execute(ok)
    breaker.execute(ok)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED


def test_closing_starts_a_fresh_failure_count() -> None:
    breaker, clock = make(failure_threshold=2, timeout=5.0)
    trip(breaker, 2)
    clock.advance(5)
    breaker.execute(ok)
    trip(breaker, 1)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_admits_at_most_half_open_max_calls_at_once() -> None:
    # A trial still running holds its slot; the next caller is rejected.
    breaker, clock = make(failure_threshold=1, timeout=5.0, half_open_max_calls=2)
    trip(breaker, 1)
    clock.advance(5)
    seen: list[str] = []

    def nested_trial() -> str:
        # Two trials in flight (this one and the one below), a third is refused.
        def inner() -> str:
            with pytest.raises(CircuitOpenError) as info:
                breaker.execute(ok)
            assert info.value.retry_after == 0.0
            seen.append("third rejected")
            return "inner"

        return breaker.execute(inner)

    assert breaker.execute(nested_trial) == "inner"
    assert seen == ["third rejected"]


def test_a_call_admitted_before_a_transition_is_not_counted_as_a_trial() -> None:
    # A slow call started while CLOSED finishes after the circuit reached
    # HALF_OPEN: its success must not close the circuit.
    breaker, clock = make(failure_threshold=1, timeout=5.0)

    def slow_then_ok() -> str:
        trip(breaker, 1)  # meanwhile another caller trips the circuit
        clock.advance(5)
        assert breaker.state is CircuitState.HALF_OPEN
        return "late"

    assert breaker.execute(slow_then_ok) == "late"
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.successes == 1


# -- exponential backoff of the open time ------------------------------------------


def test_backoff_doubles_the_open_time_after_each_failed_trial_up_to_the_cap() -> None:
    breaker, clock = make(failure_threshold=1, timeout=10.0, backoff_factor=2.0, max_timeout=35.0)
    trip(breaker, 1)
    waits = []
    for _ in range(4):
        waits.append(breaker.retry_after)
        clock.advance(breaker.retry_after or 0.0)
        trip(breaker, 1)  # the trial fails
    assert waits == [10.0, 20.0, 35.0, 35.0]
    # A successful trial resets the backoff.
    clock.advance(35)
    breaker.execute(ok)
    trip(breaker, 1)
    assert breaker.retry_after == 10.0


def test_backoff_is_capped_at_ten_timeouts_by_default() -> None:
    config = CircuitBreakerConfig(timeout=1.0, backoff_factor=3.0)
    assert [config.open_duration(n) for n in (1, 2, 3, 4, 50, 10**6)] == [
        1.0,
        3.0,
        9.0,
        10.0,
        10.0,
        10.0,
    ]


# -- failure rate over a sliding window ---------------------------------------------


def test_failure_rate_trips_only_once_minimum_calls_is_reached() -> None:
    breaker, _ = make(
        failure_threshold=None, failure_rate_threshold=0.5, window_size=10, minimum_calls=4
    )
    trip(breaker, 3)  # 3/3 failed, but fewer than minimum_calls
    assert breaker.state is CircuitState.CLOSED
    breaker.execute(ok)  # 3/4 = 75% once the window holds minimum_calls
    assert breaker.state is CircuitState.OPEN


def test_the_rate_is_evaluated_whatever_the_last_outcome() -> None:
    # The case: F F F S S, window 5, minimum 5, threshold 50%: the
    # success that fills the window finds 60% and opens the circuit.
    recorder = Recorder()
    breaker, _ = make(
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_size=5,
        minimum_calls=5,
        listeners=[recorder],
    )
    trip(breaker, 3)
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED  # 4 calls: below minimum_calls
    assert breaker.execute(ok) == "ok"  # the call itself ran and succeeded
    assert breaker.state is CircuitState.OPEN
    assert recorder.transitions[-1].reason == "failure rate 60% over 5 calls"


def test_the_slow_call_rate_is_evaluated_on_a_fast_call_too() -> None:
    breaker, clock = make(
        failure_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )

    def slow() -> str:
        clock.advance(2)
        return "slow"

    for _ in range(2):
        breaker.execute(slow)
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED
    breaker.execute(ok)  # fast, but it fills the window: 2/4 slow = 50%
    assert breaker.state is CircuitState.OPEN


def test_failure_rate_below_the_threshold_stays_closed() -> None:
    breaker, _ = make(
        failure_threshold=None, failure_rate_threshold=50, window_size=10, minimum_calls=10
    )
    for _ in range(20):
        breaker.execute(ok)
        breaker.execute(ok)
        trip(breaker, 1)  # 33% failures
    assert breaker.state is CircuitState.CLOSED
    assert breaker.health()["failure_rate"] == 0.4  # the last 10 calls: F SSF SSF SSF


def test_count_window_forgets_calls_older_than_window_size() -> None:
    breaker, _ = make(
        failure_threshold=None, failure_rate_threshold=0.5, window_size=4, minimum_calls=4
    )
    trip(breaker, 1)
    for _ in range(4):
        breaker.execute(ok)
    assert breaker.metrics.failure_rate == 0.0
    assert breaker.metrics.window_calls == 4


def test_time_window_forgets_calls_older_than_window_size_seconds() -> None:
    breaker, clock = make(
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_type="time",
        window_size=10,
        minimum_calls=3,
    )
    trip(breaker, 2)
    clock.advance(11)  # those two failures left the window
    trip(breaker, 1)
    breaker.execute(ok)
    breaker.execute(ok)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.window_calls == 3
    trip(breaker, 1)  # 2 of 4 within 10 s
    assert breaker.state is CircuitState.OPEN


# -- slow calls -----------------------------------------------------------------------


def test_slow_calls_open_the_circuit_at_the_slow_call_rate() -> None:
    clock = ManualClock()
    breaker, _ = make(
        clock,
        failure_threshold=None,
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )

    def slow() -> str:
        clock.advance(3)
        return "slow"

    breaker.execute(ok)
    breaker.execute(ok)
    breaker.execute(slow)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.execute(slow) == "slow"  # the slow call's answer is still returned
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.slow_calls == 2


def test_a_slow_trial_call_reopens_the_circuit() -> None:
    clock = ManualClock()
    breaker, _ = make(clock, failure_threshold=1, slow_call_duration=1.0, timeout=5.0)
    trip(breaker, 1)
    clock.advance(5)

    def slow() -> str:
        clock.advance(2)
        return "slow"

    breaker.execute(slow)
    assert breaker.state is CircuitState.OPEN


# -- what counts as a failure ------------------------------------------------------------


def test_ignored_exceptions_count_as_neither_success_nor_failure() -> None:
    breaker, _ = make(failure_threshold=2, ignore_exceptions=(KeyError,))
    trip(breaker, 1)
    with pytest.raises(KeyError):
        breaker.execute(lambda: {}["missing"])
    trip(breaker, 1)  # the streak was not broken by the ignored error
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.ignored == 1


def test_exceptions_outside_record_exceptions_count_as_successes() -> None:
    # The service answered (with a client error): evidence it is up.
    breaker, _ = make(failure_threshold=2, record_exceptions=(Boom,))
    trip(breaker, 1)
    with pytest.raises(ValueError):
        breaker.execute(lambda: int("x"))
    trip(breaker, 1)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.successes == 1


def test_predicates_select_failures() -> None:
    class HttpError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            self.status = status

    def server_error(exc: BaseException) -> bool:
        return isinstance(exc, HttpError) and exc.status >= 500

    def raise_status(status: int) -> None:
        raise HttpError(status)

    breaker, _ = make(failure_threshold=2, record_exceptions=(server_error,), retry_after=None)
    for status in (404, 500, 404, 500):
        with pytest.raises(HttpError):
            breaker.execute(raise_status, status)
    assert breaker.state is CircuitState.CLOSED
    breaker2, _ = make(failure_threshold=2, ignore_exceptions=(lambda e: "ignore" in str(e),))
    for message in ("boom", "ignore me", "boom"):
        with pytest.raises(RuntimeError):
            breaker2.execute(lambda m=message: (_ for _ in ()).throw(RuntimeError(m)))
    assert breaker2.state is CircuitState.OPEN


def test_record_result_turns_a_returned_value_into_a_failure() -> None:
    breaker, _ = make(failure_threshold=2, record_result=lambda value: value is None)
    assert breaker.execute(lambda: None) is None  # the value is still returned
    assert breaker.execute(lambda: None, fallback=lambda: "fallback") == "fallback"
    assert breaker.state is CircuitState.OPEN


def test_keyboard_interrupt_counts_as_neither_success_nor_failure() -> None:
    breaker, clock = make(failure_threshold=1, timeout=1.0)
    trip(breaker, 1)
    clock.advance(1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.execute(interrupted)
    # The trial slot was given back: the next trial runs and decides.
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.execute(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.ignored == 1


# -- retry hints (HTTP 429 Retry-After) --------------------------------------------------


class RateLimited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429 Too Many Requests")
        self.response = type("Response", (), {"status_code": 429, "headers": headers})()


def test_a_retry_after_header_holds_the_circuit_open_until_then() -> None:
    breaker, clock = make(failure_threshold=5, timeout=60.0)

    def limited() -> None:
        raise RateLimited({"Retry-After": "120"})

    with pytest.raises(RateLimited):
        breaker.execute(limited)
    assert breaker.state is CircuitState.OPEN  # at once, not after 5 failures
    assert breaker.retry_after == pytest.approx(120.0)
    clock.advance(119)
    assert breaker.state is CircuitState.OPEN
    clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN


def test_a_short_retry_hint_opens_only_that_long() -> None:
    breaker, clock = make(failure_threshold=5, timeout=60.0)

    class Throttled(Exception):
        retry_after = 2.5

    with pytest.raises(Throttled):
        breaker.execute(lambda: (_ for _ in ()).throw(Throttled()))
    assert breaker.retry_after == pytest.approx(2.5)


def test_retry_after_as_an_http_date_and_the_cap() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    breaker, _ = make(max_retry_after=600.0)

    def limited() -> None:
        raise RateLimited({"Retry-After": email.utils.format_datetime(later, usegmt=True)})

    with pytest.raises(RateLimited):
        breaker.execute(limited)
    assert breaker.retry_after == pytest.approx(600.0)


def test_retry_hints_can_be_turned_off() -> None:
    breaker, _ = make(retry_after=None)
    with pytest.raises(RateLimited):
        breaker.execute(lambda: (_ for _ in ()).throw(RateLimited({"Retry-After": "60"})))
    assert breaker.state is CircuitState.CLOSED


def test_a_retry_hint_on_a_failed_trial_lengthens_the_open_time() -> None:
    breaker, clock = make(failure_threshold=1, timeout=10.0)
    trip(breaker, 1)
    clock.advance(10)
    with pytest.raises(RateLimited):
        breaker.execute(lambda: (_ for _ in ()).throw(RateLimited({"Retry-After": "45"})))
    assert breaker.retry_after == pytest.approx(45.0)


# -- fallbacks -------------------------------------------------------------------------------


def test_fallback_answers_when_the_circuit_is_open_and_when_the_call_fails() -> None:
    breaker, _ = make(failure_threshold=1)
    assert breaker.execute(fail, fallback=lambda: "cached") == "cached"
    assert breaker.state is CircuitState.OPEN
    called = []
    assert breaker.execute(lambda: called.append(1), fallback=lambda: "cached") == "cached"
    assert called == []


def test_ignored_errors_are_not_swallowed_by_the_fallback() -> None:
    breaker, _ = make(ignore_exceptions=(KeyError,))
    with pytest.raises(KeyError):
        breaker.execute(lambda: {}["x"], fallback=lambda: "cached")


# -- decorator --------------------------------------------------------------------------------


def test_decorator_on_a_sync_function_and_fallback_with_its_arguments() -> None:
    breaker, _ = make(failure_threshold=1)
    calls = []

    @breaker(fallback=lambda prompt: f"cached answer to {prompt}")
    def ask(prompt: str) -> str:
        calls.append(prompt)
        raise Boom(prompt)

    assert ask("hi") == "cached answer to hi"
    assert ask("again") == "cached answer to again"
    assert calls == ["hi"]  # the second call was rejected
    assert ask.__name__ == "ask"

    @breaker
    def plain() -> str:
        return "plain"

    with pytest.raises(CircuitOpenError):
        plain()


# -- listeners, metrics, health, manual control -------------------------------------------


def test_listeners_hear_state_changes_successes_failures_and_rejections() -> None:
    recorder = Recorder()
    breaker, clock = make(failure_threshold=2, timeout=5.0, listeners=[recorder])
    breaker.execute(ok)
    trip(breaker, 2)
    breaker.execute(ok, fallback=lambda: None)
    clock.advance(5)
    breaker.execute(ok)
    assert recorder.path == ["open", "half_open", "closed"]
    assert [t.old.value for t in recorder.transitions] == ["closed", "open", "half_open"]
    assert recorder.transitions[0].reason == "2 consecutive failures"
    assert recorder.transitions[0].open_for == 5.0
    assert recorder.successes == 2
    assert len(recorder.failures) == 2 and all(isinstance(e, Boom) for e in recorder.failures)
    assert recorder.rejections == 1


def test_a_failing_listener_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def on_success(self, breaker: CircuitBreaker, duration: float) -> None:
            raise RuntimeError("listener bug")

    breaker, _ = make(listeners=[Broken()])
    with caplog.at_level(logging.ERROR, logger="pgresilience.breakers"):
        assert breaker.execute(ok) == "ok"
    assert "listener" in caplog.text


def test_an_object_without_listener_methods_is_refused() -> None:
    breaker, _ = make()
    with pytest.raises(TypeError):
        breaker.add_listener(object())


def test_removing_a_listener() -> None:
    recorder = Recorder()
    breaker, _ = make(listeners=[recorder])
    breaker.execute(ok)
    breaker.remove_listener(recorder)
    breaker.execute(ok)
    assert recorder.successes == 1


def test_metrics_count_every_outcome() -> None:
    breaker, _ = make(failure_threshold=3, ignore_exceptions=(KeyError,))
    breaker.execute(ok)
    trip(breaker, 1)
    with pytest.raises(KeyError):
        breaker.execute(lambda: {}["x"])
    trip(breaker, 2)
    breaker.execute(ok, fallback=lambda: None)
    m = breaker.metrics
    assert (m.calls, m.successes, m.failures, m.ignored, m.rejections) == (5, 1, 3, 1, 1)
    assert m.failure_rate == pytest.approx(3 / 4)
    assert m.state is CircuitState.OPEN


def test_health_reports_state_failure_rate_and_when_an_open_circuit_retries() -> None:
    breaker, clock = make(failure_threshold=2, timeout=5.0)
    assert breaker.health() == {
        "healthy": True,
        "state": "closed",
        "failure_rate": 0.0,
        "message": "Circuit closed",
        "last_failure": None,
    }
    trip(breaker, 2)
    clock.advance(1.5)
    health = breaker.health()
    assert health["healthy"] is False
    assert health["state"] == "open"
    assert health["failure_rate"] == 1.0
    assert health["message"] == "Circuit open - retry in 3500ms"
    assert health["last_failure"]["error"] == "Boom: service down"
    assert "shared_store" not in health  # only shared breakers report their store
    clock.advance(3.5)
    assert breaker.health()["state"] == "half_open"
    assert breaker.health()["healthy"] is False


def test_force_open_rejects_until_reset() -> None:
    breaker, clock = make()
    breaker.force_open()
    clock.advance(10**6)
    with pytest.raises(CircuitOpenError) as info:
        breaker.execute(ok)
    assert info.value.retry_after is None
    assert breaker.health()["state"] == "forced_open"
    breaker.reset()
    assert breaker.execute(ok) == "ok"


def test_disable_lets_everything_through_and_records_nothing() -> None:
    breaker, _ = make(failure_threshold=1)
    breaker.disable()
    trip(breaker, 10)
    assert breaker.state is CircuitState.DISABLED
    assert breaker.health()["healthy"] is True
    assert breaker.metrics.failure_rate == 0.0
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED


def test_reset_clears_an_open_circuit_and_its_counters() -> None:
    breaker, _ = make(failure_threshold=1)
    trip(breaker, 1)
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    m = breaker.metrics
    assert (m.calls, m.failures, m.rejections, m.failure_rate) == (0, 0, 0, 0.0)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 101},
        {"window_type": "sliding"},
        {"window_size": 0},
        {"window_size": 2.5},
        {"minimum_calls": 0},
        {"timeout": -1},
        {"backoff_factor": 0.5},
        {"timeout": 10, "max_timeout": 5},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
        {"slow_call_duration": 0},
        {"call_timeout": 0},
    ],
)
def test_invalid_configuration_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CircuitBreakerConfig(**options)  # type: ignore[arg-type]


def test_rates_are_fractions_or_percentages() -> None:
    assert CircuitBreakerConfig(failure_rate_threshold=50).failure_rate_threshold == 0.5
    assert CircuitBreakerConfig(failure_rate_threshold=0.25).failure_rate_threshold == 0.25
    assert CircuitBreakerConfig(slow_call_duration=1.0).slow_call_rate_threshold == 1.0


def test_record_exceptions_must_be_exception_types_or_callables() -> None:
    with pytest.raises(TypeError):
        CircuitBreakerConfig(record_exceptions=(int,))  # type: ignore[arg-type]
    assert CircuitBreakerConfig(record_exceptions=Boom).record_exceptions == (Boom,)  # type: ignore[arg-type]


def test_a_config_object_and_overrides() -> None:
    base = CircuitBreakerConfig(failure_threshold=2, timeout=3.0)
    breaker = CircuitBreaker("x", base, timeout=7.0)
    assert (breaker.config.failure_threshold, breaker.config.timeout) == (2, 7.0)
