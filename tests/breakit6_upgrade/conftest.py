"""Fixtures of the upgrade review: release 0.1.0 installed by its own
installer, in its own process, into a fresh database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from releases import RELEASE_0_1_0, install_release, release_tree


@pytest.fixture(scope="session")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, RELEASE_0_1_0)


@pytest.fixture
def install_0_1_0(release_0_1_0: Path) -> Callable[[str], None]:
    """install_0_1_0(dsn): `pgresilience install` as 0.1.0 did it."""
    return lambda dsn: install_release(release_0_1_0, dsn)
