"""The sync client is generated from the async source (scripts/generate.py);
the committed files must be exactly what it writes, and the twins must offer
the same API."""

from __future__ import annotations

import importlib.util
import inspect
import tokenize
from pathlib import Path

import pytest

from pgresilience import (
    AsyncSchemaVersionManager,
    AsyncTransactionManager,
    SchemaVersionManager,
    TransactionManager,
)
from pgresilience.transactions import AsyncTransaction, Transaction

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "scripts" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_file_is_up_to_date():
    generator = _generator()
    for name, make in generator.GENERATED.items():
        assert (ROOT / name).read_text(encoding="utf-8") == make(), (
            f"{name} differs from its source: run python scripts/generate.py"
        )


def test_generated_sync_code_has_no_async_left():
    generator = _generator()
    for name in generator.GENERATED:
        if name.endswith(".py"):
            with tokenize.open(ROOT / name) as source:
                names = {
                    token.string
                    for token in tokenize.generate_tokens(source.readline)
                    if token.type == tokenize.NAME
                }
            async_names = {"async", "await", "asyncio", *generator.SYNC_NAMES}
            assert not names & async_names, name


@pytest.mark.parametrize(
    ("sync", "async_"),
    [
        (TransactionManager, AsyncTransactionManager),
        (Transaction, AsyncTransaction),
        (SchemaVersionManager, AsyncSchemaVersionManager),
    ],
)
def test_twins_offer_the_same_api(sync, async_):
    def api(cls):
        return {
            name: [p.name for p in inspect.signature(member).parameters.values()]
            for name, member in inspect.getmembers(cls)
            if callable(member) and not name.startswith("_")
        }

    assert api(sync) == api(async_)
