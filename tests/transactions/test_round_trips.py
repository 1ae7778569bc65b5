"""Every kind of write a logical transaction captures rolls back exactly
(issue 3, item 3): the tables end byte-for-byte as they started."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import Snapshot, begin, call, execute, table_rows

SEED = """
insert into users (name, tags, meta, feeling, seen_at, balance, avatar)
values ('ada', '{math,poetry}', '{"k": [1, 2, {"x": null}]}', 'happy',
        '2024-02-29 23:59:59.123456+05:30', 1234.56, '\\x00ff10');
insert into users (name) values ('bob');
insert into profiles (user_id, bio) values (1, 'first'), (1, 'second'), (2, 'bob bio');
insert into codes values ('a', 'A'), ('b', 'B');
"""


@pytest.fixture
def seeded(app: psycopg.Connection[Any], snapshot: Snapshot) -> psycopg.Connection[Any]:
    app.execute(SEED)
    return app


def rolled_back_exactly(
    conn: psycopg.Connection[Any], tx: str, before: dict[str, Any], snapshot: Snapshot
) -> None:
    assert snapshot() != before, "the transaction should have changed something"
    result = call(conn, "tx_rollback", tx)
    assert result["success"] is True and result["status"] == "rolled_back"
    assert snapshot() == before
    assert conn.execute("select count(*) from resilience._claims()").fetchone() == (0,)


def test_insert_with_every_type_identity_generated_and_defaults(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    out = execute(
        seeded,
        tx,
        "users",
        "insert",
        {
            "name": "cyd",
            "tags": ["x", None, "z"],
            "meta": {"deep": {"a": [True, 1.5]}},
            "feeling": "sad",
            "seen_at": "2030-01-01T00:00:00Z",
            "balance": "99999.99",
            "avatar": "\\xdeadbeef",
        },
    )
    row = out["data"][0]
    assert out["success"] and out["count"] == 1
    assert row["shout"] == "CYD" and row["email"] == "nobody@example.com"  # generated, default
    assert row["id"] == 3  # identity
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_update_round_trips(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    execute(
        seeded,
        tx,
        "users",
        "update",
        {"name": "ADA", "meta": None, "tags": [], "balance": "-1.10", "avatar": None},
        {"id": 1},
    )
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_primary_key_change_round_trips(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    out = execute(seeded, tx, "codes", "update", {"code": "z"}, {"code": "a"})
    assert out["data"] == [{"code": "z", "label": "A"}]
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_delete_with_identity_restored_overriding_system_value(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    execute(seeded, tx, "profiles", "delete", match={"user_id": 2})
    execute(seeded, tx, "users", "delete", match={"id": 2})
    rolled_back_exactly(seeded, tx, before, snapshot)
    # The identity sequence was not disturbed: the next user gets id 3.
    assert seeded.execute("insert into users (name) values ('new') returning id").fetchone() == (3,)


def test_fk_on_delete_cascade_captured_and_restored(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    execute(seeded, tx, "users", "delete", match={"id": 1})
    assert table_rows(seeded, "profiles") == [before["profiles"][2]]  # the cascade ran
    rows = call(seeded, "tx_status", tx)["rows"]
    assert rows == 3  # the user and its two cascaded profiles
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_upsert_round_trips_inserted_and_updated_rows(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    out = execute(
        seeded, tx, "codes", "upsert", [{"code": "a", "label": "AA"}, {"code": "c", "label": "C"}]
    )
    assert sorted(r["code"] for r in out["data"]) == ["a", "c"]
    execute(seeded, tx, "users", "upsert", {"id": 2, "name": "bobby"})  # identity ALWAYS, by key
    assert table_rows(seeded, "users")[1]["name"] == "bobby"
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_multi_row_operations_round_trip(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    out = execute(
        seeded, tx, "codes", "insert", [{"code": f"k{i}", "label": None} for i in range(50)]
    )
    assert out["count"] == 50
    execute(seeded, tx, "profiles", "update", {"bio": "same"}, {"user_id": 1})
    execute(seeded, tx, "codes", "delete", match={"label": None})
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_several_operations_on_the_same_row(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    execute(seeded, tx, "codes", "update", {"label": "1"}, {"code": "b"})
    execute(seeded, tx, "codes", "update", {"label": "2"}, {"code": "b"})
    execute(seeded, tx, "codes", "update", {"code": "bb"}, {"code": "b"})
    execute(seeded, tx, "codes", "delete", match={"code": "bb"})
    execute(seeded, tx, "codes", "insert", {"code": "b", "label": "reborn"})
    rolled_back_exactly(seeded, tx, before, snapshot)


def test_insert_then_delete_in_one_transaction_leaves_nothing(seeded, snapshot):
    before = snapshot()
    tx = begin(seeded)
    execute(seeded, tx, "codes", "insert", {"code": "tmp"})
    execute(seeded, tx, "codes", "delete", match={"code": "tmp"})
    assert snapshot() == before
    assert call(seeded, "tx_rollback", tx)["success"] is True
    assert snapshot() == before


def test_savepoint_rollback_to_more_work_commit(seeded, snapshot):
    tx = begin(seeded)
    execute(seeded, tx, "codes", "insert", {"code": "kept", "label": "1"})
    call(seeded, "tx_savepoint", tx, "sp")
    after_savepoint = snapshot()
    execute(seeded, tx, "codes", "update", {"label": "lost"}, {"code": "kept"})
    execute(seeded, tx, "users", "delete", match={"id": 1})
    out = call(seeded, "tx_rollback_to", tx, "sp")
    assert out["success"] is True
    assert snapshot() == after_savepoint
    execute(seeded, tx, "codes", "insert", {"code": "after", "label": "2"})
    assert call(seeded, "tx_commit", tx)["status"] == "committed"
    codes = {r["code"]: r["label"] for r in table_rows(seeded, "codes")}
    assert codes == {"a": "A", "b": "B", "kept": "1", "after": "2"}
    assert len(table_rows(seeded, "users")) == 2
    assert seeded.execute("select count(*) from resilience._claims()").fetchone() == (0,)


def test_rollback_to_releases_claims_only_the_undone_work_held(seeded):
    tx = begin(seeded)
    execute(seeded, tx, "codes", "update", {"label": "x"}, {"code": "a"})
    call(seeded, "tx_savepoint", tx, "sp")
    execute(seeded, tx, "codes", "update", {"label": "y"}, {"code": "b"})
    call(seeded, "tx_rollback_to", tx, "sp")
    claimed = [r[0] for r in seeded.execute("select key from resilience._claims() order by 1")]
    assert claimed == [{"code": "a"}]


def test_commit_keeps_the_changes_and_releases_claims(seeded):
    tx = begin(seeded)
    execute(seeded, tx, "codes", "insert", {"code": "n", "label": "new"})
    assert seeded.execute("select count(*) from resilience._claims()").fetchone() == (1,)
    out = call(seeded, "tx_commit", tx)
    assert out == {"success": True, "status": "committed", "operations": 1}
    assert seeded.execute("select label from codes where code = 'n'").fetchone() == ("new",)
    assert seeded.execute("select count(*) from resilience._claims()").fetchone() == (0,)


def test_manage_table_without_primary_key_is_refused(app):
    with pytest.raises(psycopg.Error) as caught:
        app.execute("select resilience.manage_table('no_pk')")
    assert caught.value.sqlstate == "22023"
    assert "primary key" in (caught.value.diag.message_primary or "")
    assert app.execute("select count(*) from resilience.managed_tables").fetchone() == (3,)


def test_unmanage_table_removes_capture(app):
    app.execute("select resilience.unmanage_table('codes')")
    triggers = app.execute(
        "select count(*) from pg_trigger where tgrelid = 'codes'::regclass and not tgisinternal"
    ).fetchone()
    assert triggers == (0,)
    tx = begin(app)
    with pytest.raises(psycopg.Error) as caught:
        execute(app, tx, "codes", "insert", {"code": "x"})
    assert caught.value.sqlstate == "22023"  # not managed: refused rather than left uncaptured
