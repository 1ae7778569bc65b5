"""Every committed migration is one version whose changes are exactly the
objects whose `pg_dump --schema-only` text changed (see oracle.py for the
documented mapping), rated as the docs say, and whose hash changes iff the
tracked schema's dump changed. Migrations are drawn (seeded) from a
vocabulary; both diff modes (at commit, at the first read) run."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .oracle import Renames, Snapshot, change_unit, difference, is_rename, rated_changes
from .vocabulary import SCHEMAS, Step, World, base_sql, steps

pytestmark = [pytest.mark.pg_dump]


def _current(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return conn.execute("select resilience.schema_current()").fetchone()[0]


class Oracle:
    def __init__(self, server: Any, template_db: str, diff_at_commit: bool):
        self.name = f"pgr_oracle_{uuid.uuid4().hex[:10]}"
        self.server = server
        server.create_database(self.name, template=template_db)
        self.dsn = server.dsn(self.name)
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.conn.execute("set statement_timeout = '30s'")
        self.conn.execute(
            "update resilience.settings set value = %s where name = 'schema_diff_at_commit'",
            ("on" if diff_at_commit else "off",),
        )
        self.log: list[str] = []

    def close(self) -> None:
        self.conn.close()
        self.server.drop_database(self.name)

    def check(self, migration: list[Step], before: Snapshot) -> Snapshot:
        """After a committed migration: the version, its changes and hash
        against the dump oracle."""
        conn = self.conn
        after = Snapshot.take(self.dsn, conn)
        renames = Renames(
            [w for s in migration for w in s.renames.words],
            [x for s in migration for x in s.renames.literals],
        )
        diff = difference(before, after, renames)
        raw = difference(before, after, Renames())
        current = _current(conn)
        version, old_hash = before.version, before.hash
        after.version, after.hash = current["version"], current["hash"]
        sql = [q for s in migration for q in s.sql]
        self.log.append(f"{sql}")
        where = f"migration {sql}\nhistory {self.log}"
        assert after.version - version <= 1, f"more than one version for one migration: {where}"
        changes = rated_changes(conn, after.version) if after.version > version else []
        # The hash changes iff the tracked part of the dump changed.
        assert (after.hash != old_hash) == bool(raw.changed), (
            f"hash changed: {after.hash != old_hash}, dump changed: {raw.changed}; {where};"
            f" changes {changes}"
        )
        # A dropped object of a table renamed in the same migration names
        # the table by its old name: read through the renames.
        reported = {_renamed_unit(renames, change_unit(c)) for c in changes if not is_rename(c)}
        assert reported == diff.changed, (
            f"reported {sorted(reported)} but the dump changed {sorted(diff.changed)}:"
            f" {where}; changes {changes}; dump {diff.keys}"
        )
        for c in changes:
            if c["type"].endswith("_added") and c["type"].split("_")[0] in (
                "table",
                "view",
                "function",
                "enum",
            ):
                assert change_unit(c) in diff.added, f"{c} but not new in the dump: {where}"
            if c["type"].endswith("_dropped") and c["type"].split("_")[0] in (
                "table",
                "view",
                "function",
                "enum",
            ):
                assert change_unit(c) in diff.dropped, f"{c} but not gone from the dump: {where}"
        if not renames:
            assert not [c for c in changes if is_rename(c)], f"a rename reported: {where}"
        if len(migration) == 1 and migration[0].expect is not None:
            got = {(c["type"], c["severity"]) for c in changes}
            if migration[0].expect or not raw.changed:
                assert got == migration[0].expect, f"{where}: {changes}"
        return after


def _renamed_unit(renames: Renames, unit: str) -> str:
    schema, _, name = unit.rpartition(".")
    return f"{schema}.{renames.apply_name(name)}"


@settings(
    derandomize=True,
    max_examples=22,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_each_migration_reports_exactly_what_pg_dump_sees_changed(
    server: Any, template_db: str, data: st.DataObject
) -> None:
    """A user would see a migration reported with objects it never touched (a
    phantom drop + add), without one it changed, with the wrong kind or
    severity, or a hash that moved without a change (or stayed with one)."""
    diff_at_commit = data.draw(st.booleans(), label="diff_at_commit")
    schema = data.draw(st.sampled_from(SCHEMAS), label="schema")
    oracle = Oracle(server, template_db, diff_at_commit)
    conn = oracle.conn
    try:
        with conn.transaction():
            conn.execute(base_sql(schema))
        before = Snapshot.take(oracle.dsn, conn)
        current = _current(conn)
        before.version, before.hash = current["version"], current["hash"]
        counter = [0]
        world = World(conn, schema, counter)
        for _ in range(data.draw(st.integers(3, 7), label="migrations")):
            migration: list[Step] = []
            first = steps(world, data.draw)
            try:
                if first.concurrent:
                    for q in first.sql:
                        conn.execute(q)
                    migration.append(first)
                else:
                    with conn.transaction():
                        conn.execute(";".join(first.sql))
                        migration.append(first)
                        for _ in range(data.draw(st.integers(0, 2), label="more steps")):
                            step = steps(world, data.draw)
                            if step.concurrent:
                                continue
                            try:
                                with conn.transaction():  # a failing step is left out
                                    conn.execute(";".join(step.sql))
                                migration.append(step)
                            except psycopg.errors.Error:
                                pass
            except psycopg.errors.Error:
                assert _current(conn)["version"] == before.version, "a failed migration recorded"
                continue
            before = oracle.check(migration, before)
    finally:
        oracle.close()
