"""What differs from one PostgreSQL version to the next (`make test-matrix`
runs the suite on 14, 16, 17 and 18; `make test` on 15)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from pgresilience.status import TESTED_MAJORS, status_lines

if TYPE_CHECKING:
    from conftest import ServerFeatures


def test_status_names_the_server_version_and_what_is_active_on_it(
    conn: psycopg.Connection[Any], server_features: ServerFeatures
) -> None:
    [line] = [line for line in status_lines(conn) if line.startswith("server: ")]
    major, minor = divmod(server_features.version_num, 10000)
    assert line.startswith(f"server: PostgreSQL {major}.{minor} (tested)")
    assert major in TESTED_MAJORS
    diff = "diff in the database" if server_features.plpython else "diff by the Python client"
    assert f"schema versions (DDL tracked at commit, {diff})" in line


def test_a_dropped_column_default_outside_the_tracked_schemas_is_not_tracked(
    conn: psycopg.Connection[Any],
) -> None:
    """PostgreSQL 14 reports no schema for a dropped column default (15 and
    later do): such a drop must not be taken for a tracked one, which would
    leave a commit-time trigger pending on our own tables."""
    conn.execute("create table resilience.scratch (id int default 1, note text default 'x')")
    before = conn.execute("select max(version) from resilience.schema_versions").fetchone()
    with conn.transaction():
        conn.execute("drop table resilience.scratch")
        pending = conn.execute("select count(*) from resilience.schema_pending").fetchone()
        assert pending == (0,)
    after = conn.execute("select max(version) from resilience.schema_versions").fetchone()
    assert after == before
