"""The `pgresilience` command on day one, against a server that is not
answering: a host that accepts the TCP connection and then says nothing (a
hung server, a stuck pooler, a load balancer without a backend) must give
the one-line connection error and exit 3 within seconds, for every command
that connects, instead of holding the terminal or the CI job for psycopg's
default of 130 s. A `connect_timeout` the user gives (DSN or
$PGCONNECT_TIMEOUT) wins."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgresilience.cli import CONNECT_TIMEOUT, EXIT_CODES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts every connection and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in held:
            sock.close()


def _cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGCONNECT_TIMEOUT")
    }
    environment.update(env or {})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=90,  # a hang fails here, it never blocks the suite
    )
    return done, time.monotonic() - started


def _connection_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.timeout(120)
def test_cli_gives_up_on_a_server_that_never_answers(silent_port: int) -> None:
    """A user would see `pgresilience status` sit silent for over two minutes
    (install, uninstall, watch, plan and demo --dsn alike)."""
    assert EXIT_CODES[3].startswith("connection")
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/app"
    done, elapsed = _cli("status", "--dsn", url)
    line = _connection_error(done)
    assert line.startswith("pgresilience status: cannot connect to the database:"), line
    assert CONNECT_TIMEOUT - 1 <= elapsed < CONNECT_TIMEOUT + 20, elapsed

    # The user's own timeout wins, in the DSN or the environment.
    for args, env in (
        (("install", "--dsn", f"{url}?connect_timeout=2"), None),
        (("status", "--dsn", url), {"PGCONNECT_TIMEOUT": "2"}),
    ):
        done, elapsed = _cli(*args, env=env)
        line = _connection_error(done)
        assert line.startswith(f"pgresilience {args[0]}: cannot connect"), line
        assert elapsed < CONNECT_TIMEOUT - 1, (args, env, elapsed)


def test_cli_keeps_the_users_dsn_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is added only where the user set none; the rest of the
    DSN (a URL's password with reserved characters included) means the same."""
    from psycopg.conninfo import conninfo_to_dict

    from pgresilience import cli

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    args = cli.parser().parse_args(
        ["status", "--dsn", "postgresql://app:p%40ss%3Dw%20rd@db.example:6543/main?sslmode=require"]
    )
    assert conninfo_to_dict(cli._dsn(args)) == {
        "user": "app",
        "password": "p@ss=w rd",
        "host": "db.example",
        "port": "6543",
        "dbname": "main",
        "sslmode": "require",
        "connect_timeout": str(CONNECT_TIMEOUT),
    }
    args = cli.parser().parse_args(["status", "--dsn", "host=h connect_timeout=60"])
    assert conninfo_to_dict(cli._dsn(args))["connect_timeout"] == "60"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "60")
    args = cli.parser().parse_args(["status", "--dsn", "host=h"])
    assert conninfo_to_dict(cli._dsn(args)) == {"host": "h"}
