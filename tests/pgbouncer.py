"""A real PgBouncer for the tests (apt package pgbouncer, installed by
`make setup`): started from a given pgbouncer.ini, run as `postgres` when
the tests run as root (PgBouncer refuses root, like PostgreSQL), stopped
when the context ends."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_pgbouncer(
    write_config: Callable[[Path], None], address: str, port: int
) -> Iterator[None]:
    """Run PgBouncer on `address`:`port` with the configuration
    `write_config(workdir)` writes as workdir/pgbouncer.ini (its logfile and
    pidfile belong in workdir); returns once it accepts connections."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        pytest.fail("pgbouncer is not installed: `make setup` installs it (apt package pgbouncer)")
    workdir = Path(tempfile.mkdtemp(prefix="pgr-pgbouncer-"))
    write_config(workdir)
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        command = [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            *command,
        ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((address, port), timeout=1):
                    break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    assert process.stderr is not None
                    raise RuntimeError(
                        f"pgbouncer did not start: {process.stderr.read()!r}"
                    ) from exc
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
