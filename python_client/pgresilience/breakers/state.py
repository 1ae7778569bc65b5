"""The states a circuit can be in."""

from __future__ import annotations

import enum

__all__ = ["CircuitState"]


class CircuitState(enum.StrEnum):
    """``CLOSED`` lets calls through and counts outcomes; ``OPEN`` rejects them
    until its timeout ends; ``HALF_OPEN`` admits a few trial calls to decide;
    ``FORCED_OPEN`` rejects until ``reset()``; ``DISABLED`` lets everything
    through and records nothing; ``METRICS_ONLY`` lets everything through,
    records and reports, and never rejects (a dry run of the thresholds)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"
