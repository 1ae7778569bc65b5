"""Property tests: random call sequences against a reference model and
invariants that must hold whatever happens."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from pgresilience.breakers import CircuitOpenError, CircuitState, ManualClock

from .helpers import Boom, Recorder, make

# An operation: a call that succeeds / fails / raises an ignored error / is
# slow, time passing, or an operator action.
calls = st.sampled_from(["ok", "fail", "ignored", "slow"])
operations = st.lists(
    st.one_of(
        calls,
        calls,
        calls,
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=40.0)),
        st.sampled_from(["force_open", "disable", "reset"]),
    ),
    max_size=80,
)
# The same, plus the operator actions the reference model does not know.
MANUAL = ("force_open", "disable", "reset", "metrics_only", "open", "half_open")
any_operations = st.lists(
    st.one_of(
        calls,
        calls,
        calls,
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=40.0)),
        st.sampled_from(MANUAL),
    ),
    max_size=80,
)


class Ignored(Exception):
    pass


def run_call(breaker, clock: ManualClock, kind: str, ran: list[str]) -> str:  # type: ignore[no-untyped-def]
    def body() -> str:
        ran.append(kind)
        if kind == "fail":
            raise Boom("down")
        if kind == "ignored":
            raise Ignored("not the service's fault")
        if kind == "slow":
            clock.advance(3.0)
        return kind

    try:
        breaker.execute(body)
        return "ran"
    except CircuitOpenError:
        return "rejected"
    except (Boom, Ignored):
        return "ran"


@dataclass
class Model:
    """The specification, as plainly as it can be written (consecutive-failure
    rule, sequential calls)."""

    threshold: int
    timeout: float
    success_threshold: int
    backoff: float
    cap: float
    state: str = "closed"
    streak: int = 0
    opens: int = 0
    open_until: float = 0.0
    trial_successes: int = 0
    log: list[str] = field(default_factory=list)

    def open(self, now: float) -> None:
        self.opens = self.opens + 1 if self.state == "half_open" else 1
        duration = (
            self.timeout
            if self.opens == 1
            else min(self.timeout * self.backoff ** (self.opens - 1), self.cap)
        )
        self.state, self.open_until = "open", now + duration

    def call(self, kind: str, now: float) -> str:
        if self.state == "open" and now >= self.open_until:
            self.state, self.trial_successes = "half_open", 0
        if self.state in ("open", "forced_open"):
            return "rejected"
        if self.state == "disabled" or kind == "ignored":
            return "ran"
        failed = kind == "fail"
        if self.state == "closed":
            if failed:
                self.streak += 1
                if self.streak >= self.threshold:
                    self.open(now)
            else:
                self.streak = 0
        else:  # half_open
            if failed:
                self.open(now)
            else:
                self.trial_successes += 1
                if self.trial_successes >= self.success_threshold:
                    self.state, self.streak, self.opens = "closed", 0, 0
        return "ran"

    def observe(self, now: float) -> str:
        if self.state == "open" and now >= self.open_until:
            self.state, self.trial_successes = "half_open", 0
        return self.state


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    threshold=st.integers(1, 4),
    timeout=st.sampled_from([1.0, 10.0, 30.0]),
    success_threshold=st.integers(1, 3),
    backoff=st.sampled_from([1.0, 2.0]),
)
def test_the_breaker_behaves_like_the_reference_model(
    ops: list[object], threshold: int, timeout: float, success_threshold: int, backoff: float
) -> None:
    breaker, clock = make(
        failure_threshold=threshold,
        timeout=timeout,
        success_threshold=success_threshold,
        backoff_factor=backoff,
        max_timeout=timeout * 3,
        ignore_exceptions=(Ignored,),
    )
    model = Model(threshold, timeout, success_threshold, backoff, timeout * 3)
    for op in ops:
        if isinstance(op, tuple):
            clock.advance(op[1])
        elif op in ("force_open", "disable", "reset"):
            getattr(breaker, op)()
            if op == "reset":
                model.state, model.streak, model.opens = "closed", 0, 0
            else:
                model.state = "forced_open" if op == "force_open" else "disabled"
        else:
            kind = "ok" if op == "slow" else str(op)  # no slow-call rule configured here
            expected = model.call(kind, clock())
            assert run_call(breaker, clock, str(op), []) == expected, op
            if op == "slow":
                model.observe(clock())
        assert breaker.state.value == model.observe(clock())
        if model.state == "open":
            assert breaker.retry_after == max(0.0, model.open_until - clock())


@settings(max_examples=300, deadline=None)
@given(
    ops=any_operations,
    threshold=st.one_of(st.none(), st.integers(1, 5)),
    rate=st.one_of(st.none(), st.sampled_from([0.2, 0.5, 1.0])),
    window_type=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 20),
    minimum_calls=st.integers(1, 10),
    slow=st.one_of(st.none(), st.just(2.0)),
    half_open_max_calls=st.integers(1, 3),
)
def test_invariants_hold_for_any_configuration(
    ops: list[object],
    threshold: int | None,
    rate: float | None,
    window_type: str,
    window_size: int,
    minimum_calls: int,
    slow: float | None,
    half_open_max_calls: int,
) -> None:
    recorder = Recorder()
    breaker, clock = make(
        failure_threshold=threshold,
        failure_rate_threshold=rate,
        window_type=window_type,
        window_size=window_size,
        minimum_calls=minimum_calls,
        slow_call_duration=slow,
        timeout=10.0,
        half_open_max_calls=half_open_max_calls,
        ignore_exceptions=(Ignored,),
        listeners=[recorder],
    )
    ran: list[str] = []
    rejected = 0
    for op in ops:
        before = breaker.state
        seen = len(recorder.transitions)
        if isinstance(op, tuple):
            clock.advance(op[1])
        elif op in MANUAL:
            getattr(breaker, op)()
            if op == "reset":  # a fresh circuit: counters start again
                ran, rejected = [], 0
        else:
            count = len(ran)
            outcome = run_call(breaker, clock, str(op), ran)
            if before is CircuitState.DISABLED:
                del ran[count:]  # DISABLED records nothing
            if outcome == "rejected":
                rejected += 1
                # Sequential calls are rejected only by a (forced) open circuit,
                # never while CLOSED, DISABLED or with a free trial slot.
                assert before in (CircuitState.OPEN, CircuitState.FORCED_OPEN)
                assert len(ran) == count  # the call did not run
                wait = breaker.retry_after
                assert wait is None or wait > 0
            # Opening from CLOSED needs evidence: a failure or a slow call,
            # or a success that fills the window to minimum_calls while the
            # failure rate is already over.
            for t in recorder.transitions[seen:]:
                if t.old is CircuitState.CLOSED and t.new is CircuitState.OPEN:
                    assert op in ("fail", "slow") or (op == "ok" and "failure rate" in t.reason)
        core = breaker.core
        assert 0 <= core.half_open_in_flight <= half_open_max_calls
        metrics = breaker.metrics
        assert 0.0 <= metrics.failure_rate <= 1.0
        assert 0.0 <= metrics.slow_call_rate <= 1.0
        assert 0 <= metrics.window_calls
        if window_type == "count":
            assert metrics.window_calls <= window_size
        if metrics.state is CircuitState.CLOSED and threshold is not None:
            assert metrics.consecutive_failures < threshold
        assert metrics.calls == len(ran)
        assert metrics.rejections == rejected
        assert metrics.failures == ran.count("fail")
        assert metrics.ignored == ran.count("ignored")
    # Transitions chain: each starts where the previous one ended.
    state = CircuitState.CLOSED
    for transition in recorder.transitions:
        assert transition.old is state
        assert transition.new is not state
        state = transition.new
    assert state is breaker.state
