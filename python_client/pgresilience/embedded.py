"""A throwaway PostgreSQL server for the demo and the tests.

Built on testing.postgresql. PostgreSQL refuses to run as root, so when we are
root the server binaries are reached through tiny wrapper scripts that hand the
data directory to an unprivileged user and then ``exec setpriv`` into it: with
``exec`` the wrapper *becomes* the server, so the SIGINT sent by ``stop()``
reaches PostgreSQL itself and shutdown is fast (``su``/``runuser`` would keep a
parent process that swallows the signal).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EmbeddedPostgres", "find_bin_dir"]

# Throwaway server: no fsync (a process crash loses nothing, an OS crash
# would), but synchronous_commit stays on so that crash tests see every
# committed transaction after recovery.
_FAST_SETTINGS = (
    "-c fsync=off -c full_page_writes=off "
    "-c max_connections=300 -c shared_buffers=256MB -c logging_collector=off"
)

_WRAPPER = """#!/bin/sh
# PostgreSQL refuses to run as root: give the data directory to {user}, then
# become {user} with exec so that signals reach the server itself.
prev=""
for arg in "$@"; do
  if [ "$prev" = "-D" ]; then datadir="$arg"; fi
  prev="$arg"
done
if [ -n "$datadir" ]; then chown -R {uid}:{gid} "$(dirname "$datadir")"; fi
exec setpriv --reuid={uid} --regid={gid} --init-groups {binary} "$@"
"""


def find_bin_dir() -> Path:
    """The newest PostgreSQL server binaries: $PGRESILIENCE_PG_BIN, else
    /usr/lib/postgresql/<major>/bin, else whatever ``postgres`` is on PATH."""
    override = os.environ.get("PGRESILIENCE_PG_BIN")
    if override:
        return Path(override)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if candidates:
        newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name))
        return Path(newest).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise FileNotFoundError(
        "no PostgreSQL server found; install it (Debian: apt-get install postgresql) "
        "or set PGRESILIENCE_PG_BIN to its bin directory"
    )


class EmbeddedPostgres:
    """A temporary PostgreSQL server. Nothing happens until ``start()``.

    Use it as a context manager; the server and its directory are removed on
    exit, on error too. ``preload``: libraries added to
    ``shared_preload_libraries`` (``("plpython3",)`` starts PL/Python's
    interpreter in the postmaster rather than in each session: see
    docs/schema_tracking.md).
    """

    def __init__(
        self, bin_dir: Path | None = None, run_as: str = "postgres", preload: Sequence[str] = ()
    ) -> None:
        self._bin_dir = bin_dir
        self._run_as = run_as
        # testing.postgresql splits the server's arguments on whitespace.
        if any(not name or any(c.isspace() or c == "," for c in name) for name in preload):
            raise ValueError(f"library names without spaces or commas: {tuple(preload)!r}")
        self._preload = tuple(preload)
        self._server: Any = None
        self._wrapper_dir: str | None = None

    def start(self) -> EmbeddedPostgres:
        import testing.postgresql

        bin_dir = self._bin_dir or find_bin_dir()
        initdb, postgres = str(bin_dir / "initdb"), str(bin_dir / "postgres")
        if os.geteuid() == 0:
            initdb, postgres = self._root_wrappers(initdb, postgres)
        settings = _FAST_SETTINGS
        preload = list(self._preload)
        if (bin_dir.parent / "lib" / "pg_cron.so").exists():
            # pg_cron must be preloaded; its jobs run from database postgres.
            preload.insert(0, "pg_cron")
            settings += " -c cron.database_name=postgres"
        if preload:
            settings += " -c shared_preload_libraries=" + ",".join(preload)
        try:
            self._server = testing.postgresql.Postgresql(
                initdb=initdb,
                initdb_args="-U postgres -A trust --encoding=UTF8 --locale=C.UTF-8",
                postgres=postgres,
                postgres_args=f"-h 127.0.0.1 {settings}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _root_wrappers(self, initdb: str, postgres: str) -> tuple[str, str]:
        user = pwd.getpwnam(self._run_as)
        self._wrapper_dir = tempfile.mkdtemp(prefix="pgresilience-bin-")
        paths = []
        for binary in (initdb, postgres):
            path = Path(self._wrapper_dir) / Path(binary).name
            path.write_text(
                _WRAPPER.format(
                    user=self._run_as,
                    uid=user.pw_uid,
                    gid=user.pw_gid,
                    binary=shlex.quote(binary),
                )
            )
            path.chmod(0o755)
            paths.append(str(path))
        return paths[0], paths[1]

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        port = self._server.settings["port"]
        return f"host=127.0.0.1 port={port} user={user} dbname={dbname}"

    @property
    def data_dir(self) -> Path:
        return Path(self._server.get_data_directory())

    @property
    def bin_dir(self) -> Path:
        return self._bin_dir or find_bin_dir()

    def crash(self) -> None:
        """Stop the server the hard way, as ``pg_ctl stop -m immediate`` does:
        no checkpoint, crash recovery at the next start."""
        command = [str(self.bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w"]
        command += ["-D", str(self.data_dir)]
        if os.geteuid() == 0:
            user = pwd.getpwnam(self._run_as)
            command = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                *command,
            ]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        self._server.child_process.wait(timeout=60)
        self._server.child_process = None

    def restart(self) -> None:
        """Start again on the same port and data directory (after ``crash``)."""
        self._server.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        try:
            if server is not None:
                server.stop()
        finally:
            if self._wrapper_dir is not None:
                shutil.rmtree(self._wrapper_dir, ignore_errors=True)
                self._wrapper_dir = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
