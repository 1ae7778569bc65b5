"""Two migrations committing at once, as a parallel `pg_restore -j` into an
installed database does: each must still be one version of its own.

Reading a view's definition (pg_get_viewdef) locks the relations the view
reads, and a fold holds the fold lock until its commit. So a migration reads
its own views before it takes the fold lock, and a fold leaves a view another
migration is changing to that migration's version (docs/schema_tracking.md,
"Migrations at once"): no deadlock, no version lost."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from breakit11_dba.dba import last_version, psql, refresh, versions_since


def _commit_both(dsn: str, first: str, second: str) -> list[str | None]:
    """Runs `first` and `second` in two open transactions, commits the
    first (its fold may wait), then the second; returns the warnings."""
    conns = [psycopg.connect(dsn), psycopg.connect(dsn)]
    warnings: list[str | None] = []
    try:
        for conn in conns:
            conn.execute("set deadlock_timeout = '50ms'")
            conn.commit()
            conn.add_notice_handler(lambda n: warnings.append(n.message_primary))
        conns[0].execute(first)
        conns[1].execute(second)
        folding = threading.Thread(target=conns[0].commit)
        folding.start()
        time.sleep(0.3)
        conns[1].commit()
        folding.join(10)
        assert not folding.is_alive()
    finally:
        for conn in conns:
            conn.close()
    return warnings


TABLE = "alter table a add column x int"
VIEW = "alter view va rename to vb"


@pytest.mark.parametrize(
    ("first", "second"), [(VIEW, TABLE), (TABLE, VIEW)], ids=["view-first", "table-first"]
)
def test_a_view_and_its_table_migrated_at_once_are_two_versions(
    dsn: str, first: str, second: str
) -> None:
    """One migration alters a table, another renames a view over it; either
    commits first. Each is one version, and nothing is left for a refresh."""
    psql(dsn, "create table a (id int); create view va as select id from a;")
    before = last_version(dsn)[0]
    assert _commit_both(dsn, first, second) == []
    assert len(versions_since(dsn, before)) == 2
    assert refresh(dsn)["changed"] is False


def test_a_view_changed_by_both_lands_in_the_later_version(dsn: str) -> None:
    """A column renamed under a view (its printed definition changes) while
    another migration renames the view: the view is re-read by the view's
    own migration, so the definition change is in one of the two versions
    and the hash equals a fresh refresh's."""
    psql(dsn, "create table a (id int); create view va as select id from a;")
    before = last_version(dsn)[0]
    warnings = _commit_both(dsn, "alter table a rename column id to ident", VIEW)
    assert warnings == []
    versions: list[dict[str, Any]] = versions_since(dsn, before)
    assert len(versions) == 2
    assert refresh(dsn)["changed"] is False
