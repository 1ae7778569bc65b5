"""The breaker snippets of docs/breakers.md and README.md, run as pasted."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgresilience.breakers import circuit_breaker_registry

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(circuit_breaker_registry.names())
    yield
    for name in set(circuit_breaker_registry.names()) - before:
        circuit_breaker_registry.remove(name)
    circuit_breaker_registry.use_shared_store(None)


@pytest.mark.usefixtures("clean_registry")
def test_the_guides_first_snippet_runs_and_prints_health() -> None:
    [first, *_] = python_blocks(ROOT / "docs" / "breakers.md")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(first, "docs/breakers.md", "exec"), {"__name__": "snippet"})
    assert "answer to hello" in out.getvalue()
    assert "'gemini-api': {'healthy': True, 'state': 'closed'" in out.getvalue()


@pytest.mark.usefixtures("clean_registry")
def test_the_shared_state_snippet_runs(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in python_blocks(ROOT / "docs" / "breakers.md") if "SharedCircuitStore" in b]
    assert blocks
    monkeypatch.setenv("DATABASE_URL", dsn)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "docs/breakers.md", "exec"), {"__name__": "snippet"})
    assert out.getvalue().startswith("True {'healthy': True, 'state': 'closed'")
    assert "'shared_store': 'available'" in out.getvalue()


@pytest.mark.usefixtures("clean_registry")
def test_the_readme_breaker_lines_run(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [block] = [
        b for b in python_blocks(ROOT / "README.md") if "circuit_breaker_registry.get_breaker" in b
    ]
    monkeypatch.setenv("DATABASE_URL", dsn)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "snippet"})
    assert "answer" in out.getvalue()
