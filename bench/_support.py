"""What every benchmark shares: a PostgreSQL server (an embedded one, or the
superuser conninfo in $PGRESILIENCE_BENCH_DSN) and scratch databases on it.
The embedded server is the newest Debian one unless $PGRESILIENCE_PG_BIN names
another installation's bin directory (`scripts/pg-binaries.sh 17` prints one);
every benchmark first prints which server it measures.

Benchmarks run as scripts (`python bench/x.py`), so this folder is on sys.path.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres, find_bin_dir

__all__ = [
    "Rounds",
    "Timer",
    "backend_cpu_ns",
    "backend_peak_rss_kib",
    "create_database",
    "describe",
    "drop_database",
    "ratio_line",
    "scratch_database",
    "server",
    "spread",
    "verdict",
]


@contextmanager
def server(preload: Sequence[str] = ()) -> Iterator[str]:
    """The admin conninfo of the server to measure on (``preload``: libraries
    an embedded server preloads, shared_preload_libraries)."""
    external = os.environ.get("PGRESILIENCE_BENCH_DSN")
    if external:
        describe(external, "PGRESILIENCE_BENCH_DSN")
        yield external
        return
    with EmbeddedPostgres(preload=preload) as pg:
        where = f"embedded, {find_bin_dir()}" + (
            f", preloading {','.join(preload)}" if preload else ""
        )
        describe(pg.dsn(), where)
        yield pg.dsn()


def describe(admin_dsn: str, where: str) -> None:
    """Prints the server's version and whether PL/Python works there (without
    it, schema diffs are left to the client: no diff runs at commit)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("create extension if not exists plpython3u")
            plpython = "yes"
        except psycopg.Error:
            plpython = "no (schema diff by the client, none at commit)"
    assert version is not None
    print(f"server: PostgreSQL {version[0]} ({where}); PL/Python: {plpython}", flush=True)


def create_database(admin_dsn: str, name: str) -> str:
    """(Re)create an empty database; its conninfo."""
    drop_database(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(admin_dsn: str, name: str | None = None) -> Iterator[str]:
    """A fresh database with pgresilience installed, dropped afterwards."""
    name = name or f"pgr_bench_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, name)
    try:
        installer.install(dsn)
        yield dsn
    finally:
        drop_database(admin_dsn, name)


# --- Measuring: wall time and the serving backend's CPU time -----------------


def backend_cpu_ns(pid: int) -> float:
    """CPU time (ns) the server process `pid` has run so far: the first field
    of /proc/<pid>/schedstat. NaN where unreadable (a remote server)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def backend_peak_rss_kib(pid: int) -> int | None:
    """Peak resident memory (VmHWM, KiB) of the server process `pid`."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class Timer:
    """Times named parts of a round: wall time here, CPU time of the
    backend serving `conn` (the client's own CPU is not counted)."""

    conn: psycopg.Connection[Any]
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        pid = self.conn.info.backend_pid
        cpu0 = backend_cpu_ns(pid)
        t0 = time.perf_counter()
        result = fn()
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        self.cpu[name] = self.cpu.get(name, 0.0) + (backend_cpu_ns(pid) - cpu0) / 1e9
        return result


def round_order(names: list[str], number: int) -> list[str]:
    """Round `number`'s order: rotated by number // 2, reversed when odd."""
    shift = (number // 2) % len(names)
    order = names[shift:] + names[:shift]
    return order[::-1] if number % 2 else order


@dataclass
class Rounds:
    """Interleaved rounds. Each variant is a callable taking a Timer, timing
    its own parts by name (setup outside the Timer is not counted). Every
    round starts with `before_round` (VACUUM (ANALYZE)), then runs every
    variant once; the order is rotated every second round and reversed in
    odd rounds, so that each pair of variants (a baseline and its variant
    above all) runs in both orders; the first `warmup` rounds are
    discarded."""

    conn: psycopg.Connection[Any]
    variants: dict[str, Callable[[Timer], None]]
    before_round: Callable[[], None]
    rounds: int = 5
    warmup: int = 1
    samples: list[Timer] = field(default_factory=list)

    def run(self) -> Rounds:
        names = list(self.variants)
        for number in range(self.warmup + self.rounds):
            self.before_round()
            timer = Timer(self.conn)
            for name in round_order(names, number):
                self.variants[name](timer)
            if number >= self.warmup:
                self.samples.append(timer)
        return self

    def ratios(self, part: str, base: str) -> tuple[list[float], list[float]]:
        """Per round: wall-time ratio and backend CPU-time ratio part / base."""
        wall = [t.wall[part] / t.wall[base] for t in self.samples]
        cpu = [t.cpu[part] / t.cpu[base] if t.cpu[base] > 0 else math.nan for t in self.samples]
        return wall, cpu

    def median_wall(self, part: str) -> float:
        return statistics.median(t.wall[part] for t in self.samples)


def spread(values: Sequence[float]) -> str:
    """median [min-max]"""
    if any(math.isnan(v) for v in values):
        return "n/a"
    return f"{statistics.median(values):5.2f} [{min(values):.2f}-{max(values):.2f}]"


def verdict(ratio: float, target: float | None, note: str = "(floor)") -> str:
    if target is None:
        return note
    met = "ok" if ratio <= target else "MISSED"
    if not ratio <= target and round(ratio, 2) <= target:
        # printed as the target itself: show the digit that decides
        met += f" (median {ratio:.3f})"
    return f"(target <= {target}) {met}"


def ratio_line(
    results: Rounds,
    label: str,
    part: str,
    base: str,
    target: float | None,
    per: int = 1,
    note: str = "(floor)",
) -> str:
    """One printed ratio: wall median [min-max], CPU median [min-max], the
    median wall times of both sides (divided by `per`, e.g. calls per round)
    and the verdict on the median wall ratio (`note` where there is no target)."""
    wall, cpu = results.ratios(part, base)
    base_t = results.median_wall(base) / per
    part_t = results.median_wall(part) / per
    unit, scale = ("us", 1e6) if base_t < 0.01 else ("ms", 1e3)
    return (
        f"  {label:<58} wall {spread(wall)}  cpu {spread(cpu)}"
        f"  ({base_t * scale:.1f} -> {part_t * scale:.1f} {unit})"
        f"  {verdict(statistics.median(wall), target, note)}"
    )
