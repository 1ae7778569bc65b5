"""`pgresilience watch` run by the app's server role: schema tracking is "for
service_role and your server's roles" (README), i.e. members of
resilience_user, who are not the package's owner."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from .conftest import COMMAND, child_env


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str | None], wanted: str, timeout: float = 60) -> list[str]:
    seen: list[str] = []
    while True:
        line = lines.get(timeout=timeout)  # queue.Empty fails the test: no hang
        assert line is not None, f"watch ended before printing {wanted!r}: {seen}"
        seen.append(line)
        if wanted in line:
            return seen


def test_watch_by_a_member_of_resilience_user_prints_a_migration(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    app_dsn = make_role("bk5_watcher", member_of=("resilience_user",))
    process = subprocess.Popen(
        [COMMAND, "watch", "--dsn", app_dsn],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )
    try:
        lines = _lines_of(process)
        _wait_for(lines, "watching schema changes")
        conn.execute("create table watched_by_the_app (id int primary key)")
        _wait_for(lines, "watched_by_the_app")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
