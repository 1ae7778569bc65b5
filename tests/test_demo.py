"""`make demo` runs every scenario; here on a fresh database, which it leaves
as it found it."""

from __future__ import annotations

from pgresilience.demo import run_demo

from catalog import catalog_listing


def test_demo_runs_every_scenario_and_prints_each_step(bare_dsn: str) -> None:
    lines: list[str] = []
    before = catalog_listing(bare_dsn)
    run_demo(bare_dsn, say=lines.append)
    # Given a database explicitly, the demo removes everything it created.
    assert catalog_listing(bare_dsn) == before
    text = "\n".join(lines)

    assert "== install" in text and "== status" in text
    assert "installed: revision" in text
    # Logical transactions: the rollback removes the committed user too.
    assert "after rollback: 0: the user is gone too" in text
    assert "one call, one database transaction: success=True" in text
    # Claims: an expired holder blocks a plain write until a request's hook reaps it.
    assert "a plain write on that row fails at once" in text
    assert "holder timed_out" in text and "'Jane (request)'" in text
    # Circuit breakers: the fallback answers while open, then it recovers.
    assert "circuit open" in text and "[closed]" in text
