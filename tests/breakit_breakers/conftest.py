"""Fixtures of the breakers' adversarial tests: a clock that moves only when
told to, and shared stores closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgresilience.breakers import ManualClock
from pgresilience.breakers.shared import SharedCircuitStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stores(dsn: str) -> Iterator[Callable[..., SharedCircuitStore]]:
    """Makes shared stores (on this test's database by default), closed afterwards."""
    made: list[SharedCircuitStore] = []

    def make(conninfo: str = dsn, **options: Any) -> SharedCircuitStore:
        store = SharedCircuitStore(conninfo, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
