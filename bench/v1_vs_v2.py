"""Release 0.1.0 (commit dec13be: jsonb images, separate claims) against HEAD
(typed images, the image row is the claim), side by side on one server:
two databases, the same tables, interleaved rounds.

Per database: (a) tx_execute single-row insert vs a plain INSERT, each its
own autocommit call; (b) a 20,000-row UPDATE captured in a logical
transaction vs the same UPDATE on an unmanaged table; (c) its rollback vs
the plain UPDATE. Seven rounds, the first a warm-up, the databases in
alternating order, VACUUM (ANALYZE) before each; median [min-max] of the wall
ratio, and of the backend CPU ratio (/proc/<pid>/schedstat) for (a).

Usage: python bench/v1_vs_v2.py   (needs the git history: 0.1.0 is taken from it)
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

PREVIOUS = "dec13be"
REPO = Path(__file__).resolve().parents[1]
CALLS = 200
ROUNDS = 7
SCHEMA = """
create table m (id bigint primary key, grp int not null, v int not null, note text not null);
create table p (id bigint primary key, grp int not null, v int not null, note text not null);
create table mu (id bigint primary key, grp int not null, v int not null, note text not null);
create table pu (id bigint primary key, grp int not null, v int not null, note text not null);
insert into mu select g, g % 10, g, 'n' from generate_series(1, 20000) g;
insert into pu select g, g % 10, g, 'n' from generate_series(1, 20000) g;
select resilience.manage_table('m');
select resilience.manage_table('mu');
"""
INSTALL_PREVIOUS = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    " from pgresilience import installer; installer.install(sys.argv[2])"
)


def previous_release_client() -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS], capture_output=True, check=True
    )
    target = Path(tempfile.mkdtemp(prefix="pgresilience-0.1.0-"))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "python_client"


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def one_round(conn: psycopg.Connection[tuple[object, ...]], first_id: int) -> dict[str, float]:
    conn.execute("vacuum (analyze) m, p, mu, pu")
    pid = conn.info.backend_pid
    tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
    started, cpu = time.perf_counter(), cpu_ns(pid)
    for i in range(CALLS):
        conn.execute("insert into p values (%s, 1, 2, 'x')", (first_id + i,))
    plain, plain_cpu = time.perf_counter() - started, cpu_ns(pid) - cpu
    started, cpu = time.perf_counter(), cpu_ns(pid)
    for i in range(CALLS):
        row = Jsonb({"id": first_id + i, "grp": 1, "v": 2, "note": "x"})
        conn.execute("select resilience.tx_execute(%s, 'm', 'insert', %s)", (tx, row))
    managed, managed_cpu = time.perf_counter() - started, cpu_ns(pid) - cpu
    conn.execute("select resilience.tx_commit(%s)", (tx,))

    started = time.perf_counter()
    conn.execute("update pu set v = v + 1")
    update = time.perf_counter() - started
    tx = conn.execute("select resilience.tx_begin(86400000)").fetchone()[0]  # type: ignore[index]
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (str(tx),))
        conn.execute("update mu set v = v + 1")
    captured = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    rollback = time.perf_counter() - started
    return {
        "a": managed / plain,
        "a_cpu": managed_cpu / plain_cpu,
        "b": captured / update,
        "c": rollback / update,
    }


def main() -> None:
    old_client = previous_release_client()
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database v1")
            admin.execute("create database v2")
        subprocess.run(
            [sys.executable, "-c", INSTALL_PREVIOUS, str(old_client), pg.dsn("v1")],
            check=True,
            capture_output=True,
        )
        installer.install(pg.dsn("v2"))
        conns = {db: psycopg.connect(pg.dsn(db), autocommit=True) for db in ("v1", "v2")}
        for conn in conns.values():
            conn.execute(SCHEMA)
        ratios: dict[str, dict[str, list[float]]] = {
            db: {"a": [], "a_cpu": [], "b": [], "c": []} for db in conns
        }
        for number in range(ROUNDS):
            for db in ("v1", "v2") if number % 2 else ("v2", "v1"):
                measured = one_round(conns[db], (number + 1) * 10 * CALLS)
                if number:  # the first round warms up
                    for key, value in measured.items():
                        ratios[db][key].append(value)
        print(f"0.1.0 ({PREVIOUS}) vs HEAD, {ROUNDS - 1} rounds after a warm-up, median [min-max]")
        for db, name in (("v1", "0.1.0"), ("v2", "HEAD ")):
            r = ratios[db]
            print(
                f"  {name} (a) tx_execute insert / INSERT: wall {spread(r['a'])},"
                f" cpu {spread(r['a_cpu'])}"
            )
            print(f"  {name} (b) 20,000-row UPDATE captured / unmanaged: {spread(r['b'])}")
            print(f"  {name} (c) its rollback / the unmanaged UPDATE: {spread(r['c'])}")
        for conn in conns.values():
            conn.close()


if __name__ == "__main__":
    main()
