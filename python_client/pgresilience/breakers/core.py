"""The state machine: I/O-free, clock passed in, one short lock.

Every method takes the current time from the caller, so tests drive it with a
fake clock and the shared-state layer can feed it the database's decisions.
The lock guards bookkeeping only; nothing slow or blocking runs under it.

A call is admitted with a *permit*: the circuit's epoch (a counter bumped on
every transition). A call that finishes after the circuit moved on presents a
stale permit and only updates the lifetime counters, so a slow call admitted
while CLOSED can never be mistaken for a half-open trial.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from .config import CircuitBreakerConfig, Outcome
from .state import CircuitState
from .window import FAILED, SLOW, CountWindow, SlidingWindow, TimeWindow

__all__ = ["REJECTED", "PROBE_NEEDED", "CircuitCore", "Transition"]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED

#: ``acquire`` results that are not permits (permits are epochs, >= 0).
REJECTED = -1
#: The open timeout is over but a gate (shared state) must grant the trial first.
PROBE_NEEDED = -2

_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE


class Transition(NamedTuple):
    old: CircuitState
    new: CircuitState
    #: Why, in a few words ("5 consecutive failures", "failure rate 60%", ...).
    reason: str
    #: Clock time of the transition.
    at: float
    #: Seconds the circuit will stay OPEN (0.0 for other states).
    open_for: float
    #: Another process made it (learned through shared state).
    remote: bool = False
    #: An operator action: force_open(), disable() or reset().
    manual: bool = False


class CircuitCore:
    """State, counters and transitions of one circuit."""

    __slots__ = (
        "config",
        "lock",
        "state",
        "epoch",
        "window",
        "consecutive_failures",
        "open_until",
        "consecutive_opens",
        "half_open_in_flight",
        "half_open_successes",
        "probe_gated",
        "pending",
        "successes",
        "failures",
        "slow_calls",
        "rejections",
        "ignored",
        "_minimum_calls",
        "_failure_threshold",
    )

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.state = CLOSED
        self.epoch = 0
        self.window: SlidingWindow = (
            CountWindow(int(config.window_size))
            if config.window_type == "count"
            else TimeWindow(float(config.window_size))
        )
        minimum = config.minimum_calls
        if config.window_type == "count":
            minimum = min(minimum, int(config.window_size))
        self._minimum_calls = minimum
        # 0 disables the consecutive rule without a None check on the hot path.
        self._failure_threshold = config.failure_threshold or 0
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.consecutive_opens = 0
        self.half_open_in_flight = 0
        self.half_open_successes = 0
        #: When set (shared state), OPEN does not move to HALF_OPEN by itself:
        #: ``acquire`` answers PROBE_NEEDED and the caller asks the gate.
        self.probe_gated = False
        #: Transitions not yet handed to listeners (drained outside the lock).
        self.pending: list[Transition] = []
        self.successes = self.failures = 0
        self.slow_calls = self.rejections = self.ignored = 0

    # -- admission ---------------------------------------------------------

    def acquire(self, now: float) -> int:
        """A permit (>= 0) to run one call, or REJECTED, or PROBE_NEEDED."""
        with self.lock:
            state = self.state
            if state is CLOSED or state is DISABLED:
                return self.epoch
            if state is OPEN:
                if now < self.open_until:
                    self.rejections += 1
                    return REJECTED
                if self.probe_gated:
                    return PROBE_NEEDED
                self._to_half_open(now, "open timeout elapsed")
            elif state is FORCED_OPEN:
                self.rejections += 1
                return REJECTED
            # HALF_OPEN
            if self.half_open_in_flight < self.config.half_open_max_calls:
                self.half_open_in_flight += 1
                return self.epoch
            self.rejections += 1
            return REJECTED

    def retry_after(self, now: float) -> float | None:
        """Seconds until a trial call may be admitted; None when only reset() helps."""
        with self.lock:
            state = self.state
            if state is FORCED_OPEN:
                return None
            if state is OPEN:
                return max(0.0, self.open_until - now)
            return 0.0

    def poll(self, now: float) -> CircuitState:
        """The state now, moving OPEN to HALF_OPEN once its time is up."""
        with self.lock:
            if self.state is OPEN and now >= self.open_until and not self.probe_gated:
                self._to_half_open(now, "open timeout elapsed")
            return self.state

    def count_rejection(self) -> None:
        with self.lock:
            self.rejections += 1

    # -- outcomes ----------------------------------------------------------

    def closed_success(self, permit: int) -> None:
        """The hot path: a successful call admitted in CLOSED, no timing needed
        (count window, no slow-call rule)."""
        with self.lock:
            self.successes += 1
            if permit == self.epoch:
                self.consecutive_failures = 0
                # CountWindow.record(now, 0), inlined: this is the hot path.
                window = self.window
                index = window.next  # type: ignore[attr-defined]
                if window.calls == window.size:  # type: ignore[attr-defined]
                    ring = window.ring  # type: ignore[attr-defined]
                    evicted = ring[index]
                    if evicted:
                        window.failures -= evicted & FAILED
                        window.slow -= evicted >> 1
                        ring[index] = 0
                else:
                    window.calls += 1
                index += 1
                window.next = 0 if index == window.size else index  # type: ignore[attr-defined]

    def record(
        self, permit: int, now: float, duration: float, outcome: int, hint: float | None = None
    ) -> None:
        """Account for a finished call admitted with ``permit``.

        ``outcome`` is Outcome.SUCCESS, FAILURE or IGNORED; ``duration`` its
        run time (compared with slow_call_duration); ``hint`` seconds the
        failed service asked us to wait.
        """
        config = self.config
        slow_limit = config.slow_call_duration
        slow = slow_limit is not None and duration >= slow_limit and outcome != Outcome.IGNORED
        with self.lock:
            if outcome == _SUCCESS:
                self.successes += 1
            elif outcome == _FAILURE:
                self.failures += 1
            else:
                self.ignored += 1
            if slow:
                self.slow_calls += 1
            state = self.state
            if permit != self.epoch:
                # Admitted before the last transition: history, not evidence,
                # except that a server asking us to back off is always heard.
                if hint is not None and outcome == _FAILURE and state is OPEN:
                    self._extend_open(now, hint)
                return
            if state is CLOSED:
                if outcome == _SUCCESS:
                    self.consecutive_failures = 0
                    self.window.record(now, SLOW if slow else 0)
                    if slow and config.uses_window:
                        self._check_rates(now)
                elif outcome == _FAILURE:
                    self.consecutive_failures += 1
                    self.window.record(now, FAILED | SLOW if slow else FAILED)
                    threshold = self._failure_threshold
                    if threshold and self.consecutive_failures >= threshold:
                        self._open(now, f"{self.consecutive_failures} consecutive failures", hint)
                    elif config.uses_window and self._check_rates(now, hint):
                        pass
                    elif hint is not None:
                        # The service said when to come back: hold off until then.
                        self._open(now, f"service asked to retry after {hint:.3g}s", hint, True)
            elif state is HALF_OPEN:
                self.half_open_in_flight -= 1
                if outcome == _FAILURE:
                    self._open(now, "trial call failed", hint)
                elif outcome == _SUCCESS:
                    if slow:
                        self._open(now, "trial call was slow", hint)
                        return
                    self.half_open_successes += 1
                    if self.half_open_successes >= config.success_threshold:
                        self._close(now, f"{self.half_open_successes} trial calls succeeded")

    def _check_rates(self, now: float, hint: float | None = None) -> bool:
        """Open the circuit if a rate rule says so; True when it did."""
        config = self.config
        window = self.window
        window.expire(now)
        calls = window.calls
        if calls < self._minimum_calls:
            return False
        failure_limit = config.failure_rate_threshold
        if failure_limit is not None and window.failures >= failure_limit * calls:
            self._open(now, f"failure rate {window.failures / calls:.0%} over {calls} calls", hint)
            return True
        slow_limit = config.slow_call_rate_threshold
        if (
            config.slow_call_duration is not None
            and slow_limit is not None
            and window.slow >= slow_limit * calls
        ):
            self._open(now, f"slow call rate {window.slow / calls:.0%} over {calls} calls", hint)
            return True
        return False

    # -- transitions (lock held) -------------------------------------------

    def _move(
        self,
        new: CircuitState,
        now: float,
        reason: str,
        open_for: float = 0.0,
        *,
        remote: bool = False,
        manual: bool = False,
    ) -> None:
        old = self.state
        self.state = new
        self.epoch += 1
        self.pending.append(Transition(old, new, reason, now, open_for, remote, manual))

    def _open(self, now: float, reason: str, hint: float | None, hint_only: bool = False) -> None:
        config = self.config
        self.consecutive_opens = self.consecutive_opens + 1 if self.state is HALF_OPEN else 1
        duration = 0.0 if hint_only else config.open_duration(self.consecutive_opens)
        if hint is not None:
            duration = max(duration, min(hint, config.max_retry_after))
        self.open_until = now + duration
        self.half_open_in_flight = 0
        self.half_open_successes = 0
        self._move(OPEN, now, reason, duration)

    def _extend_open(self, now: float, hint: float) -> None:
        until = now + min(hint, self.config.max_retry_after)
        if until > self.open_until:
            self.open_until = until

    def _to_half_open(self, now: float, reason: str) -> None:
        self.half_open_in_flight = 0
        self.half_open_successes = 0
        self._move(HALF_OPEN, now, reason)

    def _close(self, now: float, reason: str) -> None:
        self.consecutive_failures = 0
        self.consecutive_opens = 0
        self.window.reset()
        self._move(CLOSED, now, reason)

    # -- operator actions and shared state -----------------------------------

    def force_open(self, now: float) -> None:
        with self.lock:
            if self.state is not FORCED_OPEN:
                self._move(FORCED_OPEN, now, "forced open", manual=True)

    def disable(self, now: float) -> None:
        with self.lock:
            if self.state is not DISABLED:
                self._move(DISABLED, now, "disabled", manual=True)

    def reset(self, now: float) -> None:
        """Back to a fresh CLOSED circuit: window, streaks and counters cleared."""
        with self.lock:
            self.consecutive_failures = 0
            self.consecutive_opens = 0
            self.half_open_in_flight = 0
            self.half_open_successes = 0
            self.open_until = 0.0
            self.window.reset()
            self.successes = self.failures = 0
            self.slow_calls = self.rejections = self.ignored = 0
            if self.state is not CLOSED:
                self._move(CLOSED, now, "reset", manual=True)
            else:
                self.epoch += 1  # calls in flight belong to the old circuit

    def begin_half_open(self, now: float, reason: str) -> int:
        """The gate granted a trial: enter HALF_OPEN and take its first slot.

        Returns a permit, or REJECTED when the circuit moved on meanwhile.
        """
        with self.lock:
            if self.state is OPEN:
                self._to_half_open(now, reason)
            if self.state is not HALF_OPEN:
                return self.epoch if self.state is CLOSED or self.state is DISABLED else REJECTED
            if self.half_open_in_flight < self.config.half_open_max_calls:
                self.half_open_in_flight += 1
                return self.epoch
            self.rejections += 1
            return REJECTED

    def apply_remote(self, state: CircuitState, now: float, open_for: float, reason: str) -> bool:
        """Adopt a transition another process made. True if anything changed.

        Remote OPEN sets the open deadline from the database's figure; remote
        CLOSED clears the local streaks. Local HALF_OPEN is left alone: this
        process holds the probe and its outcome will decide.
        """
        with self.lock:
            current = self.state
            if state is OPEN:
                until = now + open_for
                if current is OPEN:
                    if until > self.open_until + 0.001:
                        self.open_until = until
                        return True
                    return False
                if current is HALF_OPEN:
                    return False
                self.open_until = until
                self.consecutive_opens = max(self.consecutive_opens, 1)
                self._move(OPEN, now, reason, open_for, remote=True)
                return True
            if state is current:
                return False
            if state is CLOSED:
                if current is HALF_OPEN or current is DISABLED:
                    return False
                self.consecutive_failures = 0
                self.consecutive_opens = 0
                self.window.reset()
            if state is HALF_OPEN:
                # Another process is probing: stay OPEN here until it decides.
                return False
            self._move(state, now, reason, open_for, remote=True)
            return True

    def take_pending(self) -> list[Transition]:
        with self.lock:
            pending = self.pending
            self.pending = []
        return pending
