"""CREATE INDEX CONCURRENTLY is rated below the plain form; the invalid
index a failed CONCURRENTLY leaves is reported as such at the next re-read
of its table; DROP NOT NULL is medium."""

from __future__ import annotations

import psycopg
import pytest

from .conftest import Tracker, one_change


def since_one(tracker: Tracker, before: int) -> list[dict[str, object]]:
    versions = tracker.since(before)
    assert len(versions) == 1
    return list(versions[0])


def test_concurrently_is_rated_below_plain(tracker: Tracker) -> None:
    tracker.conn.execute('create table "Big T" (a int, b int)')
    before = tracker.latest()
    tracker.conn.execute('create index concurrently "c i" on "Big T" (a)')  # autocommit
    concurrent = one_change(since_one(tracker, before))
    plain = one_change(tracker.migrate('create index "p i" on "Big T" (b)'))
    assert (concurrent["type"], concurrent["severity"]) == ("index_added", "low")
    assert (plain["type"], plain["severity"]) == ("index_added", "medium")


def test_invalid_index_of_a_failed_concurrently_is_reported(tracker: Tracker) -> None:
    tracker.conn.execute("create table t (a int)")
    tracker.conn.execute("insert into t values (1), (1)")
    before = tracker.latest()
    with pytest.raises(psycopg.errors.UniqueViolation):
        tracker.conn.execute("create unique index concurrently tu on t (a)")
    assert tracker.latest() == before  # the failed command fired no event trigger
    changes = tracker.migrate("alter table t add column z int")
    assert {(c["type"], c["severity"]) for c in changes} == {
        ("column_added", "low"),
        ("index_invalid", "high"),
    }


def test_drop_not_null_is_medium(tracker: Tracker) -> None:
    tracker.conn.execute("create table t (a int not null)")
    change = one_change(tracker.migrate("alter table t alter a drop not null"))
    assert (change["type"], change["severity"]) == ("nullability_changed", "medium")
