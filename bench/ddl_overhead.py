"""What schema tracking costs DDL, measured side by side in one run.

(a) N CREATE TABLE in one transaction, tracked database vs plain database
    (target: ratio <= 1.5), the designs below beside them;
(b) one ALTER TABLE ADD COLUMN in a database of 5,000 tables: extra time with
    tracking (target <= 20 ms; the snapshot re-reads only the touched table);
(c) commit-to-callback latency of SchemaVersionManager's listener
    (median target <= 50 ms);
(d) replay of a realistic migration history (60 files: tables, FKs, indexes,
    renames, type changes, views, functions, policies, enums), one psql
    process per file as migration tools do (target: tracked/untracked <= 1.3);
(e) 2,000 ADD COLUMN (20 tables x 100) in one transaction (target <= 3.0);
(f) the first DDL on a new connection, tracked minus untracked (target <= 10 ms).

(d) and (f) measure two tracked databases side by side with the untracked
one: the setting schema_diff_at_commit off (the commit records the version,
its first reader rates it) and the package's default, the diff at commit
(setting on: the commit starts PL/Python), both fresh databases; and, in
the same rounds, the bench-local designs of bench/ddl_designs.sql (two that
keep a version's contract, and the bare hooks as a lower bound). (a)-(c)
and (e) use the setting --diff-at-commit (default here: off).

(a), (d)-(f): VACUUM ANALYZE before each round, the variants interleaved
(alternating who goes first), 1 warm-up round then >= 5 measured; each prints
median [min-max] of wall time and of backend CPU time (/proc/<pid>/schedstat).

Usage: python bench/ddl_overhead.py [--quick] [--only a,b,c,d,e,f] [--diff-at-commit on|off]
Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN (superuser).
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgresilience import installer
from pgresilience.embedded import find_bin_dir
from pgresilience.schema import ChangeList, SchemaVersionManager

from _support import create_database, drop_database, server

TRACKED, PLAIN = "bench_ddl_tracked", "bench_ddl_plain"
# (d) and (f) compare two fresh tracked databases (not TRACKED, which (a)-(c) fill).
SIDE_OFF, SIDE_AT_COMMIT = "bench_ddl_side_off", "bench_ddl_side_at_commit"
# (d) and (f): the variants measured side by side (label -> database role).
SETTING_OFF, DIFF_AT_COMMIT = "tracked, setting off", "tracked, diff at commit (default)"
# ... and, beside them, the bench-local designs of bench/ddl_designs.sql
# (database name -> design.mode); the label says which keep the contract.
DESIGNS = {
    "bench_ddl_design_fold": ("fold at commit", "(design) fold at commit, few statements"),
    "bench_ddl_design_staged": ("read per statement", "(design) read per statement"),
    "bench_ddl_design_hooks": ("hooks only", "(lower bound, no snapshot) hooks only"),
}


def fresh_database(admin_dsn: str, name: str, *, tracked: bool) -> str:
    dsn = create_database(admin_dsn, name)
    if tracked:
        report = installer.install(dsn)
        assert report.event_triggers, "the benchmark needs a superuser (event triggers)"
    return dsn


def design_database(admin_dsn: str, name: str, mode: str) -> str:
    """An untracked database with one of bench/ddl_designs.sql's designs."""
    dsn = create_database(admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((Path(__file__).parent / "ddl_designs.sql").read_text())
        conn.execute("insert into design.settings (mode) values (%s)", (mode,))
    return dsn


def set_diff_at_commit(dsn: str, value: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "update resilience.settings set value = %s where name = 'schema_diff_at_commit'",
            (value,),
        )


def create_tables(conn: psycopg.Connection[Any], prefix: str, count: int) -> float:
    """Seconds to create ``count`` tables in one transaction, commit included."""
    start = time.perf_counter()
    with conn.transaction():
        for i in range(count):
            conn.execute(
                sql.SQL(
                    "create table {} (id bigint generated always as identity primary key, "
                    "name text not null, created_at timestamptz not null default now())"
                ).format(sql.Identifier(f"{prefix}{i}"))
            )
    return time.perf_counter() - start


def bench_create(tracked: dict[str, str], plain: str, count: int, count_rounds: int) -> float:
    """``tracked``: label -> database; the first label's wall ratio is returned."""

    def reset(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("drop schema if exists bench_a cascade")
            conn.execute("create schema bench_a")

    def create(dsn: str) -> Sample:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set search_path = bench_a")
            # The session's first tracked DDL is (f)'s: out of this measure.
            create_tables(conn, "warmup_", 1)
            pid = conn.info.backend_pid
            cpu = backend_cpu(pid)
            wall = create_tables(conn, "a_", count)
            return wall, backend_cpu(pid) - cpu

    samples = rounds({**tracked, "untracked": plain}, create, reset, count_rounds)
    return [
        ratio_line(f"(a) {count} CREATE TABLE in one transaction", samples, "target <= 1.5", label)
        for label in tracked
    ][0]


def bench_alter(tracked: str, plain: str, tables: int, alters: int) -> float:
    medians: dict[str, float] = {}
    with (
        psycopg.connect(tracked, autocommit=True) as t,
        psycopg.connect(plain, autocommit=True) as p,
    ):
        for conn in (t, p):
            for start in range(0, tables, 500):
                create_tables(conn, f"b{start}_", min(500, tables - start))
        samples: dict[str, list[float]] = {"tracked": [], "plain": []}
        for i in range(alters):
            for label, conn in (("plain", p), ("tracked", t)):
                target = sql.Identifier(f"b0_{i % 500}")
                statement = sql.SQL("alter table {} add column {} integer").format(
                    target, sql.Identifier(f"extra_{i}")
                )
                begin = time.perf_counter()
                conn.execute(statement)  # autocommit: the commit (and the fold) is included
                samples[label].append(time.perf_counter() - begin)
        medians = {label: statistics.median(values) for label, values in samples.items()}
        objects = t.execute("select count(*) from resilience.schema_objects").fetchone()
    extra_ms = (medians["tracked"] - medians["plain"]) * 1000
    print(
        f"(b) ALTER TABLE ADD COLUMN among {tables} tables ({objects[0] if objects else '?'} "
        f"tracked objects): tracked {medians['tracked'] * 1000:.1f} ms, plain "
        f"{medians['plain'] * 1000:.1f} ms, extra {extra_ms:.1f} ms (target <= 20 ms) "
        f"[median of {alters}]"
    )
    return extra_ms


def bench_latency(tracked: str, samples: int) -> float:
    arrivals: queue.Queue[tuple[int, float]] = queue.Queue()

    def on_change(changes: ChangeList) -> None:
        arrivals.put((changes.version, time.perf_counter()))

    after_commit: list[float] = []
    after_send: list[float] = []
    with (
        SchemaVersionManager(tracked) as manager,
        psycopg.connect(tracked, autocommit=True) as conn,
    ):
        manager.initialize()
        manager.on_schema_change(on_change)
        assert manager.wait_listening()
        for i in range(samples):
            sent = time.perf_counter()
            conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(f"c{i}")))
            committed = time.perf_counter()
            _, arrived = arrivals.get(timeout=10)
            # The callback can run before execute() has even returned here.
            after_commit.append(max(arrived - committed, 0.0))
            after_send.append(arrived - sent)
    median_ms = statistics.median(after_send) * 1000
    print(
        f"(c) commit-to-callback latency: median {statistics.median(after_commit) * 1000:.1f} ms "
        f"after the commit returned; median {median_ms:.1f} ms, max "
        f"{max(after_send) * 1000:.1f} ms from sending the DDL (target median <= 50 ms) "
        f"[{samples} commits]"
    )
    return median_ms


# --- (d)-(f): rounds, wall and backend CPU time ------------------------------


def backend_cpu(pid: int) -> float:
    """Seconds of CPU a backend has used (first field of /proc/<pid>/schedstat, ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def spread(values: list[float], unit: float = 1.0, fmt: str = "{:.0f}") -> str:
    scaled = [v * unit for v in values]
    return (
        fmt.format(statistics.median(scaled))
        + " ["
        + fmt.format(min(scaled))
        + "-"
        + fmt.format(max(scaled))
        + "]"
    )


Sample = tuple[float, float]  # (wall seconds, backend CPU seconds)


def rounds(
    dsns: dict[str, str],
    measure: Callable[[str], Sample],
    reset: Callable[[str], None],
    count: int,
) -> dict[str, list[Sample]]:
    """One warm-up round, then ``count`` rounds; in each, every variant once,
    alternating who goes first, after VACUUM ANALYZE and ``reset``."""
    samples: dict[str, list[Sample]] = {label: [] for label in dsns}
    labels = list(dsns)
    for r in range(count + 1):
        order = labels if r % 2 == 0 else labels[::-1]
        for label in order:
            reset(dsns[label])
            with psycopg.connect(dsns[label], autocommit=True) as conn:
                # No truncation: a catalog cut back to its live rows makes the next
                # round extend it again (1,000 CREATE TABLE: 1.5 s or up to 4 s).
                conn.execute("vacuum (analyze, truncate false)")
            sample = measure(dsns[label])
            if r > 0:
                samples[label].append(sample)
    return samples


def ratio_line(
    title: str, samples: dict[str, list[Sample]], target: str, tracked_label: str = "tracked"
) -> float:
    tracked, plain = samples[tracked_label], samples["untracked"]
    wall_ratio = statistics.median(w for w, _ in tracked) / statistics.median(w for w, _ in plain)
    cpu_ratio = statistics.median(c for _, c in tracked) / statistics.median(c for _, c in plain)
    print(
        f"{title}: {tracked_label} wall {spread([w for w, _ in tracked], 1000)} ms, "
        f"untracked {spread([w for w, _ in plain], 1000)} ms: ratio {wall_ratio:.2f} ({target}); "
        f"backend CPU {tracked_label} {spread([c for _, c in tracked], 1000)} ms, "
        f"untracked {spread([c for _, c in plain], 1000)} ms: ratio {cpu_ratio:.2f} "
        f"[median [min-max] of {len(tracked)} rounds]"
    )
    return wall_ratio


def q(template: str, **names: str) -> sql.Composed:
    """``template`` with ``{name}`` placeholders filled as quoted identifiers."""
    return sql.SQL(template).format(**{k: sql.Identifier(v) for k, v in names.items()})  # type: ignore[arg-type]  # literal templates


def migration_history() -> list[list[sql.Composable]]:
    """60 migrations of a growing app in schema app, the kinds of DDL real
    histories hold, one list of statements per file."""
    files: list[list[sql.Composable]] = [[q("create type app.status as enum ('new', 'paid')")]]
    for i in range(12):
        t, prev = f"t{i}", f"t{i - 1}"
        files.append([q(
            "create table app.{t} (id bigint generated always as identity primary key,"
            " name varchar(40) not null, qty integer check (qty >= 0), st app.status,"
            " created_at timestamptz not null default now())", t=t,
        )])  # fmt: skip
        if i:
            files.append([
                q("alter table app.{t} add column parent_id bigint", t=t),
                q("alter table app.{t} add constraint {fk} foreign key (parent_id) "
                  "references app.{prev} (id) not valid", t=t, fk=f"{t}_parent_fk", prev=prev),
                q("alter table app.{t} validate constraint {fk}", t=t, fk=f"{t}_parent_fk"),
            ])  # fmt: skip
        files.append([q("create index {ix} on app.{t} (name)", ix=f"{t}_name_idx", t=t)])
        if i % 2 == 0:
            files.append([
                q("alter table app.{t} alter column qty type bigint", t=t),
                q("alter table app.{t} alter column name type text", t=t),
            ])  # fmt: skip
        if i % 3 == 0:
            files.append([
                q("alter table app.{t} rename column name to title", t=t),
                q("create view app.{v} as select id, title from app.{t} where qty > 0",
                  v=f"app_v{i}", t=t),
                q("alter table app.{t} enable row level security", t=t),
                q("create policy {p} on app.{t} using (qty >= 0)", p=f"{t}_read", t=t),
                q("create function app.{f}(n bigint) returns bigint language sql immutable as "
                  "'select n * 2'", f=f"app_f{i}"),
            ])  # fmt: skip
        files.append([q("alter table app.{t} add column note text default ''", t=t)])
    files.append([q("alter type app.status add value 'shipped'")])
    files.append([q("alter table app.t11 rename to t11_archive")])
    files.append([q("drop index app.t10_name_idx"), q("alter table app.t10 drop column note")])
    return files


SCHEDSTAT = "select split_part(pg_read_file('/proc/' || pg_backend_pid() || '/schedstat'), ' ', 1)"


def as_file(statements: list[sql.Composable], conn: psycopg.Connection[Any]) -> str:
    body = ";\n".join(s.as_string(conn) for s in statements)
    return "begin;\n" + body + ";\ncommit;\n"


def bench_replay(tracked: dict[str, str], plain: str, count: int) -> float:
    """``tracked``: label -> database; the first label's ratio is returned."""
    # The server's own psql, else the system's (the npm server builds ship none).
    bundled = find_bin_dir() / "psql"
    psql = str(bundled) if bundled.exists() else (shutil.which("psql") or "psql")
    with tempfile.TemporaryDirectory() as folder, psycopg.connect(plain) as conn:
        paths = []
        for n, statements in enumerate(migration_history()):
            path = Path(folder) / f"{n:03d}.sql"
            path.write_text(as_file(statements, conn))
            paths.append(path)

        def reset(dsn: str) -> None:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("drop schema if exists app cascade")
                c.execute("create schema app")

        def replay(dsn: str) -> Sample:
            params = conninfo_to_dict(dsn)
            base = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(params["host"]),
                    "-p", str(params["port"]), "-U", str(params["user"]),
                    "-d", str(params["dbname"])]  # fmt: skip
            cpu = 0.0
            start = time.perf_counter()
            for path in paths:
                # The backend's CPU, read by itself once the file committed.
                done = subprocess.run(
                    [*base, "-At", "-f", str(path), "-c", SCHEDSTAT],
                    check=False, capture_output=True, text=True,
                )  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"{path.name} failed on {dsn}: {done.stderr}")
                cpu += int(done.stdout.split()[-1]) / 1e9
            return time.perf_counter() - start, cpu

        samples = rounds({**tracked, "untracked": plain}, replay, reset, count)
    ratios = [
        ratio_line(
            f"(d) replay of {len(paths)} migration files, one psql process each",
            samples,
            "target <= 1.3",
            label,
        )
        for label in tracked
    ]
    return ratios[0]


def bench_add_columns(
    tracked: str, plain: str, count: int, tables: int = 20, per_table: int = 100
) -> float:
    names = [f"wide{i}" for i in range(tables)]

    def reset(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            for name in names:
                c.execute(q("drop table if exists {t}", t=name))
                c.execute(q("create table {t} (id int)", t=name))

    def add_columns(dsn: str) -> Sample:
        with psycopg.connect(dsn, autocommit=True) as c:
            pid = c.info.backend_pid
            cpu = backend_cpu(pid)
            start = time.perf_counter()
            with c.transaction():
                for name in names:
                    for n in range(per_table):
                        c.execute(q("alter table {t} add column {c} integer", t=name, c=f"c{n}"))
            return time.perf_counter() - start, backend_cpu(pid) - cpu

    samples = rounds({"tracked": tracked, "untracked": plain}, add_columns, reset, count)
    return ratio_line(
        f"(e) {tables * per_table} ADD COLUMN in one transaction", samples, "target <= 3.0"
    )


def bench_first_ddl(
    tracked: dict[str, str], plain: str, count: int, connections: int = 10
) -> float:
    """Per round: ``connections`` new connections, each timing its first DDL.
    ``tracked``: label -> database; the first label's extra CPU is returned."""
    counter = iter(range(10**9))

    def reset(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("drop schema if exists first_ddl cascade")
            c.execute("create schema first_ddl")

    def first_ddl(dsn: str) -> Sample:
        wall = cpu = 0.0
        for _ in range(connections):
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("select 1")
                pid = c.info.backend_pid
                before = backend_cpu(pid)
                start = time.perf_counter()
                c.execute(q("create table first_ddl.{t} (id int)", t=f"f{next(counter)}"))
                wall += time.perf_counter() - start
                cpu += backend_cpu(pid) - before
        return wall / connections, cpu / connections

    samples = rounds({**tracked, "untracked": plain}, first_ddl, reset, count)
    plain_s = samples["untracked"]

    def ms(values: list[float]) -> str:
        return spread(values, 1000, "{:.1f}")

    extras: list[float] = []
    for label in tracked:
        tracked_s = samples[label]
        extra = (
            statistics.median(w for w, _ in tracked_s) - statistics.median(w for w, _ in plain_s)
        ) * 1000
        extra_cpu = (
            statistics.median(c for _, c in tracked_s) - statistics.median(c for _, c in plain_s)
        ) * 1000
        print(
            f"(f) first DDL on a new connection: {label} {ms([w for w, _ in tracked_s])} ms, "
            f"untracked {ms([w for w, _ in plain_s])} ms: extra {extra:.1f} ms; "
            f"backend CPU {label} {ms([c for _, c in tracked_s])} ms, "
            f"untracked {ms([c for _, c in plain_s])} ms: extra {extra_cpu:.1f} ms "
            f"(target <= 10 ms) [mean of {connections} connections per round; "
            f"median [min-max] of {len(tracked_s)} rounds]"
        )
        extras.append(extra_cpu)
    return extras[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smaller sizes)")
    parser.add_argument("--only", default="a,b,c,d,e,f", help="which parts to run (default: all)")
    parser.add_argument(
        "--diff-at-commit",
        choices=("on", "off"),
        default="off",
        help="setting schema_diff_at_commit of the tracked database of (a)-(c), (e) "
        "(default: off; the package's default is on); (d) and (f) measure both",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    create_count = 300 if args.quick else 1000
    tables, alters = (1000, 10) if args.quick else (5000, 30)
    samples = 10 if args.quick else 30
    rounds_def = 5  # >= 5 measured rounds even in --quick

    verdicts: list[bool] = []
    with server() as admin_dsn:
        tracked = fresh_database(admin_dsn, TRACKED, tracked=True)
        plain = fresh_database(admin_dsn, PLAIN, tracked=False)
        set_diff_at_commit(tracked, args.diff_at_commit)
        side_by_side: dict[str, str] = {}
        if parts & {"a", "d", "f"}:
            side_by_side[SETTING_OFF] = fresh_database(admin_dsn, SIDE_OFF, tracked=True)
            side_by_side[DIFF_AT_COMMIT] = fresh_database(admin_dsn, SIDE_AT_COMMIT, tracked=True)
            set_diff_at_commit(side_by_side[SETTING_OFF], "off")
            set_diff_at_commit(side_by_side[DIFF_AT_COMMIT], "on")
            for name, (mode, label) in DESIGNS.items():
                side_by_side[label] = design_database(admin_dsn, name, mode)
        print(
            f"schema_diff_at_commit = {args.diff_at_commit} for (a)-(c), (e); (d), (f): "
            f"'{SETTING_OFF}' = off, '{DIFF_AT_COMMIT}' = on"
        )
        try:
            # (d) and (f) first, on fresh databases: (a)'s thousands of
            # tables leave every catalog larger, which slows a new session's
            # first DDL by ~5 ms in every variant.
            if "d" in parts:
                verdicts.append(bench_replay(side_by_side, plain, rounds_def) <= 1.3)
            if "f" in parts:
                verdicts.append(bench_first_ddl(side_by_side, plain, rounds_def) <= 10)
            if "a" in parts:
                designs = {label: side_by_side[label] for _, label in DESIGNS.values()}
                verdicts.append(
                    bench_create({"tracked": tracked, **designs}, plain, create_count, rounds_def)
                    <= 1.5
                )
            if "b" in parts:
                verdicts.append(bench_alter(tracked, plain, tables, alters) <= 20)
            if "c" in parts:
                verdicts.append(bench_latency(tracked, samples) <= 50)
            if "e" in parts:
                verdicts.append(bench_add_columns(tracked, plain, rounds_def) <= 3.0)
        finally:
            drop_database(admin_dsn, TRACKED)
            drop_database(admin_dsn, SIDE_OFF)
            drop_database(admin_dsn, SIDE_AT_COMMIT)
            for name in DESIGNS:
                drop_database(admin_dsn, name)
            drop_database(admin_dsn, PLAIN)
    print(f"targets {'met' if all(verdicts) else 'NOT met'}")


if __name__ == "__main__":
    main()
