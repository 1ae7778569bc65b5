"""Helpers of the fifth review: the Python client and the command as users run them.

Whatever may hang runs in a child process bounded by a timeout (its whole
process group is killed when it runs out), so a break is a failing test,
never a stuck suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: the ``pgresilience`` command of this virtualenv
COMMAND = str(Path(sys.executable).with_name("pgresilience"))
#: a bound on every child process; nothing here needs more than a few seconds
TIMEOUT = 120.0


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_bounded(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    input_text: str | None = None,
    timeout: float = TIMEOUT,
) -> Ran:
    """Runs ``argv`` without a terminal (stdin from /dev/null unless
    ``input_text``) in its own process group; fails the test, after killing the
    group, when it outlives ``timeout``."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input_text is not None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else child_env(),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{argv[:3]} hung for {timeout} s; stderr: {stderr[-2000:]}")
    return Ran(process.returncode, stdout, stderr)


def run_python(script: str, *args: str, timeout: float = TIMEOUT) -> Ran:
    """Runs ``script`` with this virtualenv's python, bounded (see ``run_bounded``)."""
    return run_bounded([sys.executable, "-c", script, *args], timeout=timeout)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no DATABASE_URL unless given."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(extra)
    return env


def open_database_transactions(conn: Any) -> list[str]:
    """States of the other sessions of ``conn``'s database that are inside a
    database transaction (what an error must never leave behind)."""
    rows = conn.execute(
        "select state from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid() and xact_start is not null"
        " and backend_type = 'client backend'"
    ).fetchall()
    return [r[0] for r in rows]


def statuses(conn: Any) -> list[tuple[str, str]]:
    """(status, outcome reason) of every logical transaction, oldest first."""
    rows = conn.execute(
        "select status, coalesce(outcome->>'reason', '') from resilience.transactions"
        " order by started_at, id"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
