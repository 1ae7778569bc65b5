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
METRICS_ONLY = CircuitState.METRICS_ONLY

#: ``acquire`` results that are not permits (permits are epochs, >= 0).
REJECTED = -1
#: The open timeout is over but a gate (shared state) must grant the trial
#: first. Handed to one caller at a time: until it calls ``finish_probe``,
#: the others are rejected without asking (one probe question in flight).
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
    #: An operator action: open(), half_open(), force_open(), disable(),
    #: metrics_only() or reset(), or the end of a half-open episode an
    #: operator started.
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
        "half_open_since",
        "manual_half_open",
        "probe_gated",
        "probe_in_flight",
        "would_open",
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
        self.half_open_since = 0.0
        #: The current HALF_OPEN episode was started by ``half_open()``.
        self.manual_half_open = False
        #: When set (shared state), OPEN does not move to HALF_OPEN by itself:
        #: ``acquire`` answers PROBE_NEEDED and the caller asks the gate.
        self.probe_gated = False
        #: A caller holds PROBE_NEEDED and is asking the gate.
        self.probe_in_flight = False
        #: METRICS_ONLY: why the circuit would have opened (None: it would not).
        self.would_open: str | None = None
        #: Transitions not yet handed to listeners (drained outside the lock).
        self.pending: list[Transition] = []
        self.successes = self.failures = 0
        self.slow_calls = self.rejections = self.ignored = 0

    # -- admission ---------------------------------------------------------

    def acquire(self, now: float) -> int:
        """A permit (>= 0) to run one call, or REJECTED, or PROBE_NEEDED."""
        with self.lock:
            state = self.state
            if state is CLOSED or state is DISABLED or state is METRICS_ONLY:
                return self.epoch
            if state is OPEN:
                if now < self.open_until:
                    self.rejections += 1
                    return REJECTED
                if self.probe_gated:
                    if self.probe_in_flight:
                        self.rejections += 1
                        return REJECTED
                    self.probe_in_flight = True
                    return PROBE_NEEDED
                self._to_half_open(now, "open timeout elapsed")
            elif state is FORCED_OPEN:
                self.rejections += 1
                return REJECTED
            # HALF_OPEN
            if self.half_open_in_flight < self.config.half_open_max_calls:
                self.half_open_in_flight += 1
                return self.epoch
            self._reopen_if_hung(now)
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
        """The state now, moving OPEN to HALF_OPEN once its time is up (and a
        HALF_OPEN with hung trials back to OPEN)."""
        with self.lock:
            if self.state is OPEN and now >= self.open_until and not self.probe_gated:
                self._to_half_open(now, "open timeout elapsed")
            elif self.state is HALF_OPEN:
                self._reopen_if_hung(now)
            return self.state

    def _reopen_if_hung(self, now: float) -> None:
        """max_wait_in_half_open: trials still running that long count as a
        failed trial (their late outcomes carry a stale permit: history only)."""
        limit = self.config.max_wait_in_half_open
        if limit is not None and self.half_open_in_flight and now - self.half_open_since >= limit:
            self._open(now, f"trial call still running after {limit:.3g}s", None)

    def finish_probe(self, now: float, granted: bool) -> int:
        """The gate answered the PROBE_NEEDED holder: a permit, or REJECTED.

        ``granted`` False: refused (the gate has moved the local deadline).
        Always ends the probe question, whatever the state is by now.
        """
        with self.lock:
            self.probe_in_flight = False
            if not granted:
                self.rejections += 1
                return REJECTED
            return self._begin_half_open(now, "open timeout elapsed")

    def count_rejection(self) -> None:
        with self.lock:
            self.rejections += 1

    # -- outcomes ----------------------------------------------------------

    def closed_success(self, permit: int) -> None:
        """The hot path: a successful call admitted in CLOSED, no timing needed
        (count window, no slow-call rule)."""
        with self.lock:
            if permit != self.epoch:
                # Admitted before a transition: history only (none if DISABLED).
                if self.state is not DISABLED:
                    self.successes += 1
                return
            self.successes += 1
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
    ) -> bool:
        """Account for a finished call admitted with ``permit``.

        ``outcome`` is Outcome.SUCCESS, FAILURE or IGNORED; ``duration`` its
        run time (compared with slow_call_duration); ``hint`` seconds the
        failed service asked us to wait. False when nothing was recorded
        (DISABLED): the caller then tells no listener either.
        """
        config = self.config
        slow_limit = config.slow_call_duration
        slow = slow_limit is not None and duration >= slow_limit and outcome != Outcome.IGNORED
        with self.lock:
            state = self.state
            if state is DISABLED:
                return False  # DISABLED records nothing, not even late outcomes
            if outcome == _SUCCESS:
                self.successes += 1
            elif outcome == _FAILURE:
                self.failures += 1
            else:
                self.ignored += 1
            if slow:
                self.slow_calls += 1
            if permit != self.epoch:
                # Admitted before the last transition: history, not evidence,
                # except that a server asking us to back off is always heard.
                if hint is not None and outcome == _FAILURE and state is OPEN:
                    self._extend_open(now, hint)
                return True
            if state is CLOSED or state is METRICS_ONLY:
                if outcome == _SUCCESS:
                    self.consecutive_failures = 0
                    self.window.record(now, SLOW if slow else 0)
                elif outcome == _FAILURE:
                    self.consecutive_failures += 1
                    self.window.record(now, FAILED | SLOW if slow else FAILED)
                else:
                    return True
                # Whatever the last outcome: a success may be the call that
                # fills the window to minimum_calls with a rate already over.
                reason = None
                threshold = self._failure_threshold
                if outcome == _FAILURE and threshold and self.consecutive_failures >= threshold:
                    reason = f"{self.consecutive_failures} consecutive failures"
                elif config.uses_window:
                    reason = self._rate_reason(now)
                if reason is None and hint is not None:
                    # The service said when to come back: hold off until then.
                    reason = f"service asked to retry after {hint:.3g}s"
                    if state is CLOSED:
                        self._open(now, reason, hint, True)
                        return True
                if reason is not None:
                    if state is CLOSED:
                        self._open(now, reason, hint)
                    else:
                        self.would_open = reason
            elif state is HALF_OPEN:
                self.half_open_in_flight -= 1
                if outcome == _FAILURE:
                    self._open(now, "trial call failed", hint)
                elif outcome == _SUCCESS:
                    if slow:
                        self._open(now, "trial call was slow", hint)
                        return True
                    self.half_open_successes += 1
                    if self.half_open_successes >= config.success_threshold:
                        self._close(now, f"{self.half_open_successes} trial calls succeeded")
            return True

    def _rate_reason(self, now: float) -> str | None:
        """Why a rate rule says open, or None (the window below minimum_calls
        never says so)."""
        config = self.config
        window = self.window
        window.expire(now)
        calls = window.calls
        if calls < self._minimum_calls:
            return None
        failure_limit = config.failure_rate_threshold
        if failure_limit is not None and window.failures >= failure_limit * calls:
            return f"failure rate {window.failures / calls:.0%} over {calls} calls"
        slow_limit = config.slow_call_rate_threshold
        if (
            config.slow_call_duration is not None
            and slow_limit is not None
            and window.slow >= slow_limit * calls
        ):
            return f"slow call rate {window.slow / calls:.0%} over {calls} calls"
        return None

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
        if old is HALF_OPEN and self.manual_half_open:
            # The end of an episode an operator started is theirs too (the
            # shared store publishes it as an operator action).
            manual = manual or not remote
            self.manual_half_open = False
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

    def _to_half_open(self, now: float, reason: str, *, manual: bool = False) -> None:
        self.half_open_in_flight = 0
        self.half_open_successes = 0
        self.half_open_since = now
        self._move(HALF_OPEN, now, reason, manual=manual)
        self.manual_half_open = manual

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

    def metrics_only(self, now: float) -> None:
        with self.lock:
            if self.state is not METRICS_ONLY:
                self.would_open = None
                self._move(METRICS_ONLY, now, "metrics only", manual=True)

    def open(self, now: float, duration: float | None) -> None:
        """An operator opens the circuit for ``duration`` seconds (None: the
        configured open time); it then probes as after a trip."""
        with self.lock:
            if duration is None:
                duration = self.config.open_duration(max(self.consecutive_opens, 1))
            self.consecutive_opens = max(self.consecutive_opens, 1)
            self.open_until = now + duration
            if self.state is OPEN:
                return  # a new deadline, not a transition
            self.half_open_in_flight = 0
            self.half_open_successes = 0
            self._move(OPEN, now, "opened by operator", duration, manual=True)

    def half_open(self, now: float) -> None:
        """An operator starts a half-open episode now: trial calls decide
        (already HALF_OPEN: the episode under way goes on)."""
        with self.lock:
            if self.state is not HALF_OPEN:
                self._to_half_open(now, "half-opened by operator", manual=True)

    def reset(self, now: float) -> None:
        """Back to a fresh CLOSED circuit: window, streaks and counters cleared."""
        with self.lock:
            self.consecutive_failures = 0
            self.consecutive_opens = 0
            self.half_open_in_flight = 0
            self.half_open_successes = 0
            self.open_until = 0.0
            self.would_open = None
            self.window.reset()
            self.successes = self.failures = 0
            self.slow_calls = self.rejections = self.ignored = 0
            if self.state is not CLOSED:
                self._move(CLOSED, now, "reset", manual=True)
            else:
                self.epoch += 1  # calls in flight belong to the old circuit

    def _begin_half_open(self, now: float, reason: str) -> int:
        """The gate granted a trial: enter HALF_OPEN and take its first slot.

        Returns a permit, or REJECTED when the circuit moved on meanwhile.
        """
        state = self.state
        if state is OPEN:
            self._to_half_open(now, reason)
        elif state is not HALF_OPEN:
            if state is CLOSED or state is DISABLED or state is METRICS_ONLY:
                return self.epoch
            self.rejections += 1
            return REJECTED
        if self.half_open_in_flight < self.config.half_open_max_calls:
            self.half_open_in_flight += 1
            return self.epoch
        self.rejections += 1
        return REJECTED

    def apply_remote(
        self,
        state: CircuitState,
        now: float,
        open_for: float,
        reason: str,
        *,
        exact: bool = False,
        probe_over: bool = False,
        open_count: int = 0,
    ) -> bool:
        """Adopt a transition another process made. True if anything changed.

        Remote OPEN sets the open deadline from the database's figure (only
        later, unless ``exact``: news newer than what this process saw
        replaces the deadline, so a failed probe elsewhere re-admits us after
        ``timeout``, not after a lease we were told to wait for). Remote
        CLOSED clears the local streaks, and ends DISABLED (an operator's reset
        elsewhere). Local HALF_OPEN is left alone: this
        process holds the probe and its outcome will decide; unless
        ``probe_over``: a CLOSED written by another process after our grant
        (an operator's reset, or the process that took over an expired
        lease) ends our episode, and trials still running become history. A
        METRICS_ONLY breaker is a local dry run and ignores remote news.
        ``open_count`` is the circuit's opens in a row as the row counts
        them: whichever process probes next backs off from the whole
        circuit's history, not from its own share of it.
        """
        with self.lock:
            current = self.state
            if current is METRICS_ONLY:
                return False
            if state is OPEN:
                until = now + open_for
                if open_count > self.consecutive_opens and current is not HALF_OPEN:
                    self.consecutive_opens = open_count
                if current is OPEN:
                    if until > self.open_until + 0.001 or (
                        exact and abs(until - self.open_until) > 0.001
                    ):
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
                # DISABLED is left by a remote CLOSED too: the row says
                # closed over disabled only after an operator's reset.
                if current is HALF_OPEN and not probe_over:
                    return False
                self.consecutive_failures = 0
                self.consecutive_opens = 0
                self.window.reset()
            if state is HALF_OPEN:
                # Another process is probing: stay OPEN here until it decides.
                return False
            self._move(state, now, reason, open_for, remote=True)
            return True

    def adopt_open_count(self, open_count: int) -> None:
        """The circuit's opens in a row as the shared row counts them (a
        granted probe backs off from the whole circuit's history)."""
        with self.lock:
            if open_count > self.consecutive_opens:
                self.consecutive_opens = open_count

    def take_pending(self) -> list[Transition]:
        with self.lock:
            pending = self.pending
            self.pending = []
        return pending
