"""Where the database side (sql/, plpython/, alembic/) is found.

An installed wheel carries them in ``pgresilience/_data``; a source checkout
(editable install) has them at the repository root.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["data_path"]

_FOLDERS = ("sql", "plpython", "alembic")


def data_path(name: str) -> Path:
    if name not in _FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; one of {_FOLDERS}")
    packaged = Path(str(importlib.resources.files("pgresilience"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"pgresilience data folder {name!r} not found (broken install?)")
