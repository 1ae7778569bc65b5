"""Fixtures of the breakers' adversarial tests: a clock that moves only when
told to, and shared stores closed after each test."""

from __future__ import annotations

from typing import Any

import pytest
from breakers.conftest import stores as stores  # one definition of the stores fixture

from pgresilience.breakers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Boom(Exception):
    """The service failed."""


def fail() -> Any:
    raise Boom("down")


def ok() -> str:
    return "ok"
