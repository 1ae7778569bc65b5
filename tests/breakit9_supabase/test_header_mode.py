"""Header mode: plain PostgREST writes (`from('todos').insert(...)`) carrying
`x-resilience-tx` are captured into that logical transaction; a header that
names no usable transaction of the caller fails the write, never lets it
through uncaptured; rows RLS hides from a user never reach them."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from .supa import ALICE, BOB, Rest, sqlstate, table_rows


def _in_tx(conn: psycopg.Connection[Any], tx: Any, sub: str = ALICE) -> Rest:
    return Rest(conn, sub=sub, headers={"x-resilience-tx": str(tx)})


def test_plain_writes_with_the_header_roll_back_as_a_real_rollback_would(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    alice.request("insert into todos (title, secret) values ('keep', 'k'), ('drop', 'd')")
    Rest(authenticator, sub=BOB).request("insert into todos (title) values ('bob')")
    before = table_rows(project)
    tx = alice.rpc("tx_begin", timeout_ms=30000, label="header")
    in_tx = _in_tx(authenticator, tx)
    # What supabase-js sends: insert/update/delete ... returning, one request each.
    in_tx.request("insert into todos (title) values ('new') returning *")
    in_tx.request("update todos set secret = 'changed' where title = 'keep' returning *")
    in_tx.request("delete from todos where title = 'drop' returning *")
    in_tx.request("update todos set title = 'everyone' returning *")  # RLS: Alice's rows only
    status = alice.rpc("tx_status", tx_id=tx)
    assert (status["operations"], status["rows"]) == (4, 5)
    assert in_tx.rpc("tx_rollback", tx_id=tx)["status"] == "rolled_back"
    assert table_rows(project) == before
    # The client keeps its header: later writes fail instead of going uncaptured.
    assert sqlstate(lambda: in_tx.request("insert into todos (title) values ('late')")) == "RZ002"
    assert table_rows(project) == before


NOT_A_TRANSACTION = [
    "nope",
    " {tx}",
    "{tx} ",
    "{{{tx}}}",
    "{tx}x",
    "00000000-0000-0000-0000-000000000000",
    "null",
    "'; drop table todos; --",
]


def test_a_header_naming_no_transaction_fails_the_write_with_rz001(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    alice.request("insert into todos (title) values ('mine')")
    before = table_rows(project)
    for value in NOT_A_TRANSACTION:
        writer = Rest(authenticator, sub=ALICE, headers={"x-resilience-tx": value.format(tx=tx)})
        for statement in (
            "insert into todos (title) values ('h')",
            "update todos set title = 'h'",
            "delete from todos",
        ):
            assert sqlstate(lambda s=statement, w=writer: w.request(s)) == "RZ001", (
                value,
                statement,
            )
    assert table_rows(project) == before


def test_uuid_spellings_postgresql_accepts_name_the_same_transaction_an_empty_header_none(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    before = table_rows(project)
    tx = alice.rpc("tx_begin")
    for spelling in (str(tx).upper(), str(tx).replace("-", "")):
        writer = Rest(authenticator, sub=ALICE, headers={"x-resilience-tx": spelling})
        writer.request("insert into todos (title) values ('h')")
    assert alice.rpc("tx_status", tx_id=tx)["rows"] == 2
    alice.rpc("tx_rollback", tx_id=tx)
    assert table_rows(project) == before
    Rest(authenticator, sub=ALICE, headers={"x-resilience-tx": ""}).request(
        "insert into todos (title) values ('plain')"
    )
    assert any("plain" in row for row in table_rows(project))


def test_a_finished_or_expired_transaction_in_the_header_refuses_the_write(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    committed = alice.rpc("tx_begin")
    alice.rpc("tx_commit", tx_id=committed)
    expiring = alice.rpc("tx_begin", timeout_ms=1)
    time.sleep(0.05)
    before = table_rows(project)
    insert = "insert into todos (title) values ('h')"
    assert sqlstate(lambda: _in_tx(authenticator, committed).request(insert)) == "RZ002"
    assert sqlstate(lambda: _in_tx(authenticator, expiring).request(insert)) == "RZ003"
    assert table_rows(project) == before


def test_tx_execute_writes_into_its_own_transaction_and_tx_run_into_the_headers(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    before = table_rows(project)
    mine = alice.rpc("tx_begin")
    other = alice.rpc("tx_begin")
    alice.rpc("tx_commit", tx_id=other)
    _in_tx(authenticator, other).rpc(
        "tx_execute", tx_id=mine, table_name="todos", operation="insert", data={"title": "x"}
    )
    assert alice.rpc("tx_status", tx_id=mine)["rows"] == 1
    # tx_run, a plain batch, joins the header's transaction.
    _in_tx(authenticator, mine).rpc(
        "tx_run", operations=[{"table": "todos", "operation": "insert", "data": {"title": "r"}}]
    )
    assert alice.rpc("tx_status", tx_id=mine)["rows"] == 2
    alice.rpc("tx_rollback", tx_id=mine)
    assert table_rows(project) == before


def test_rows_hidden_by_rls_never_show_in_claims_conflicts_or_results(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    bob = Rest(authenticator, sub=BOB)
    row = alice.request("insert into todos (title, secret) values ('a', 'TOPSECRET') returning id")
    key = row[0][0]
    tx = alice.rpc("tx_begin")
    _in_tx(authenticator, tx).request("update todos set secret = 'SECRET2' where id = %s", (key,))
    # Bob's writes, in his own header transaction and plain, reach nothing of Alice's.
    bob_tx = bob.rpc("tx_begin")
    assert (
        _in_tx(authenticator, bob_tx, BOB).request("update todos set secret = 'x' returning *")
        == []
    )
    assert bob.request("delete from todos where id = %s returning *", (key,)) == []
    assert bob.rpc("tx_status", tx_id=bob_tx)["rows"] == 0
    # A superuser changes the row behind Alice's claim (replica mode skips the guard);
    # her rollback's conflict names no key (she may not read the table as
    # stored: RLS) and no value.
    with psycopg.connect(project, autocommit=True) as admin:
        admin.execute("set session_replication_role = replica")
        admin.execute("update todos set secret = 'DRIFT' where id = %s", (key,))
    with pytest.raises(psycopg.Error) as conflict:
        alice.rpc("tx_rollback", tx_id=tx)
    assert conflict.value.sqlstate == "RZ005"
    detail = json.loads(conflict.value.diag.message_detail or "{}")
    assert [c["key"] for c in detail["conflicts"]] == [None]
    text = f"{conflict.value.diag.message_primary} {conflict.value.diag.message_detail}"
    assert "SECRET" not in text and "DRIFT" not in text


def test_read_only_requests_can_read_a_transaction_and_run_pre_request(
    authenticator: psycopg.Connection[Any],
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    expired = alice.rpc("tx_begin", timeout_ms=1)
    time.sleep(0.05)
    # A GET (or a POST to a STABLE function): PostgREST runs it read-only, the
    # db-pre-request hook first.
    reader = Rest(authenticator, sub=ALICE, read_only=True, headers={"x-resilience-tx": str(tx)})
    assert reader.request("select resilience.tx_pre_request()") == [("",)]
    assert reader.rpc("tx_status", tx_id=tx)["status"] == "active"
    assert reader.request("select count(*) from tx_active()") == [(2,)]  # expired, not reaped
    assert reader.request("select count(*) from todos") == [(0,)]
    # The read-write pre-request of the next write request reaps the expired one.
    alice.request("select resilience.tx_pre_request()")
    assert alice.rpc("tx_status", tx_id=expired)["status"] == "timed_out"


@pytest.mark.xfail(
    strict=True,
    reason="header mode is seen only by the capture triggers of managed tables: a header "
    "write to a table nobody managed goes through uncaptured, and tx_rollback reports "
    "success without undoing it (docs/transactions.md, known limitations)",
)
def test_a_header_write_to_an_unmanaged_table_is_refused_or_rolled_back(
    project: str, owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("create table notes (id int primary key, body text)")
        owner.execute("grant select, insert on notes to authenticated")
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    # tx_execute refuses it (22023, "not managed"); the header write should too.
    assert (
        sqlstate(
            lambda: alice.rpc(
                "tx_execute", tx_id=tx, table_name="notes", operation="insert", data={"id": 1}
            )
        )
        == "22023"
    )
    wrote = sqlstate(lambda: _in_tx(authenticator, tx).request("insert into notes values (2, 'x')"))
    alice.rpc("tx_rollback", tx_id=tx)
    assert wrote is not None or table_rows(project, "notes") == []


COMMENTS = """
create table comments (
    id bigint generated by default as identity primary key,
    todo_id bigint not null references todos (id) on delete cascade,
    author uuid not null default auth.uid(),
    slug text unique,
    body text
);
alter table comments enable row level security;
create policy mine on comments for all to authenticated
    using (author = (select auth.uid())) with check (author = (select auth.uid()));
grant select, insert, update, delete on comments to authenticated;
select resilience.manage_table('comments');
"""
CAROL = "00000000-0000-0000-0000-0000000000c3"


def test_a_cascade_into_other_users_rows_rolls_back_and_its_failure_names_no_value(
    project: str, owner_dsn: str, authenticator: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(COMMENTS)
    alice = Rest(authenticator, sub=ALICE)
    todo = alice.request("insert into todos (title) values ('parent') returning id")[0][0]
    Rest(authenticator, sub=BOB).request(
        "insert into comments (todo_id, slug, body) values (%s, 'bob-slug', 'bob body')", (todo,)
    )
    before = table_rows(project, "comments")
    # Alice deletes her todo in a header request: Bob's comment goes by cascade.
    tx = alice.rpc("tx_begin")
    _in_tx(authenticator, tx).request("delete from todos where id = %s", (todo,))
    assert table_rows(project, "comments") == []
    # Carol takes the slug meanwhile: the undo cannot bring Bob's comment back.
    carol = Rest(authenticator, sub=CAROL)
    mine = carol.request("insert into todos (title) values ('c') returning id")[0][0]
    carol.request(
        "insert into comments (todo_id, slug, body) values (%s, 'bob-slug', 'carol')", (mine,)
    )
    with pytest.raises(psycopg.Error) as refused:
        alice.rpc("tx_rollback", tx_id=tx)
    assert refused.value.sqlstate == "RZ005"
    text = f"{refused.value.diag.message_primary} {refused.value.diag.message_detail}"
    assert not any(value in text for value in ("bob-slug", "bob body", "carol"))
    # Once the slug is free again, the rollback restores Bob's comment as it was.
    carol.request("delete from comments where slug = 'bob-slug'")
    assert alice.rpc("tx_rollback", tx_id=tx)["status"] == "rolled_back"
    assert table_rows(project, "comments") == before


def test_header_writes_after_a_savepoint_go_with_rollback_to_and_the_rest_commits(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    alice = Rest(authenticator, sub=ALICE)
    tx = alice.rpc("tx_begin")
    in_tx = _in_tx(authenticator, tx)
    in_tx.request("insert into todos (title) values ('before')")
    alice.rpc("tx_savepoint", tx_id=tx, name="s")
    in_tx.request("insert into todos (title) values ('after')")
    in_tx.request("update todos set title = 'changed' where title = 'before'")
    alice.rpc("tx_rollback_to", tx_id=tx, name="s")
    assert alice.rpc("tx_commit", tx_id=tx)["status"] == "committed"
    assert [row.split(",")[2] for row in table_rows(project)] == ["before"]
    # Committed: the rows are free for a plain write of anyone allowed.
    assert alice.request("update todos set title = 'free' returning title") == [("free",)]
