"""`pgresilience watch` prints each committed migration's version once, in
order, with its changes; nothing for a failed one. `pgresilience status`
shows the version the last migration made (docs/cli.md)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.breakit5_schema.conftest import CLI, MIGRATIONS, last_version, psql

pytestmark = pytest.mark.plpython


def _file(name: str) -> Path:
    return next(f for f in MIGRATIONS if f.stem.endswith(name))


def test_watch_prints_each_committed_migration_once_and_status_the_last(
    dsn: str, tmp_path: Path
) -> None:
    watcher = subprocess.Popen(
        [*CLI, "watch", "--dsn", dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith("watching schema changes")
        start = last_version(dsn)
        assert psql(dsn, _file("enums")) == 0
        failing = tmp_path / "fails.sql"
        failing.write_text("create table public.x (id int);\nselect 1 / 0;\n")
        assert psql(dsn, failing) == 3
        enum_extended = tmp_path / "extend.sql"
        enum_extended.write_text("alter type public.order_status add value 'refunded';\n")
        assert psql(dsn, enum_extended) == 0
        assert last_version(dsn) == start + 2
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            lines.append(line)
            if line.startswith(f"schema version {start + 2} "):
                lines.append(watcher.stdout.readline())  # its one change
                break
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=30)
    heads = [line for line in lines if line.startswith("schema version ")]
    assert [h.split()[2] for h in heads] == [str(start + 1), str(start + 2)]
    assert sum("[low] enum_added public.user_role" in line for line in lines) == 1
    assert sum("[low] enum_changed public.order_status" in line for line in lines) == 1
    assert not any("public.x" in line for line in lines)

    status = subprocess.run(
        [*CLI, "status", "--dsn", dsn], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0
    assert f"current version: {start + 2} " in status.stdout
