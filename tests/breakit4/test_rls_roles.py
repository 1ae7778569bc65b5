"""Roles: a table owned by a non-superuser role, written by two other
non-superuser roles, with row level security and column grants.

Promises (DESIGN.md section 1, "Restore-point storage", "Rollback"): images
are never readable by clients; a caller never sees, through any function or
error, rows RLS hides from it or columns it may not select; the undo of a
cascade into another user's rows restores them exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute, rows_text, sqlstate_of

SECRET = "bob-secret-value"

SCHEMA = """
create table parent (id int primary key, owner text not null default current_user);
create table notes (
    id int primary key,
    parent int not null references parent on delete cascade,
    owner text not null default current_user,
    body text not null unique
);
alter table parent enable row level security;
alter table notes enable row level security;
create policy everyone on parent using (true);
create policy own on notes using (owner = current_user);
grant select, insert, update, delete on parent, notes to bt4_alice, bt4_bob;
select resilience.manage_table('parent');
select resilience.manage_table('notes');
"""


@pytest.fixture
def roles(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> dict[str, psycopg.Connection[Any]]:
    """Connections of bt4_owner (owns the tables), bt4_alice and bt4_bob."""
    dsns = {
        name: make_role(name, member_of=("resilience_user",))
        for name in ("bt4_owner", "bt4_alice", "bt4_bob")
    }
    conn.execute("grant create, usage on schema public to bt4_owner")
    connections = {n: psycopg.connect(d, autocommit=True) for n, d in dsns.items()}
    connections["bt4_owner"].execute(SCHEMA)
    return connections


def _close(roles: dict[str, psycopg.Connection[Any]]) -> None:
    for connection in roles.values():
        connection.close()


def test_cascade_into_rows_rls_hides_restores_them_and_shows_nothing(
    conn: psycopg.Connection[Any], roles: dict[str, psycopg.Connection[Any]]
) -> None:
    """Alice deletes her parent row; the cascade deletes bob's note, which
    RLS hides from her. The rollback must bring it back exactly. It used to
    restore nothing at all and report success: the undo runs as the table
    owner (bt4_owner, not superuser, not the package owner), and the image
    table has RLS on with no policy, so that owner read no image."""
    alice, bob = roles["bt4_alice"], roles["bt4_bob"]
    try:
        alice.execute("insert into parent (id) values (1)")
        bob.execute("insert into notes (id, parent, body) values (7, 1, %s)", (SECRET,))
        before = rows_text(conn, "notes", "id")
        tx = begin(alice)
        result = execute(alice, tx, "parent", "delete", None, {"id": 1})
        assert result["count"] == 1
        assert SECRET not in json.dumps(result)
        assert rows_text(conn, "notes", "id") == []  # the cascade took bob's note
        status = call(alice, "tx_status", tx)
        assert SECRET not in json.dumps(status, default=str)
        assert sqlstate_of(call, alice, "tx_images", tx) == "42501"
        audit = alice.execute("select detail::text from resilience.audit_log").fetchall()
        assert all(SECRET not in row[0] for row in audit)
        assert call(alice, "tx_rollback", tx)["success"] is True
        assert rows_text(conn, "notes", "id") == before
    finally:
        _close(roles)


def test_cascade_into_rows_forced_rls_hides_from_the_owner_is_refused_whole(
    conn: psycopg.Connection[Any], roles: dict[str, psycopg.Connection[Any]]
) -> None:
    """With FORCE ROW LEVEL SECURITY the table owner, whose rights the undo
    runs with, cannot see every row (the cascade itself bypassed RLS): the
    rollback is refused (42501, docs/transactions.md) and changes nothing,
    never reports success over a lost row."""
    alice, bob = roles["bt4_alice"], roles["bt4_bob"]
    try:
        roles["bt4_owner"].execute("alter table notes force row level security")
        alice.execute("insert into parent (id) values (1)")
        bob.execute("insert into notes (id, parent, body) values (7, 1, %s)", (SECRET,))
        tx = begin(alice)
        execute(alice, tx, "parent", "delete", None, {"id": 1})
        after_cascade = [rows_text(conn, t, "id") for t in ("parent", "notes")]
        assert sqlstate_of(call, alice, "tx_rollback", tx) == "42501"
        assert [rows_text(conn, t, "id") for t in ("parent", "notes")] == after_cascade
        assert call(alice, "tx_status", tx)["status"] == "active"
    finally:
        _close(roles)


def test_rz005_over_rows_rls_hides_names_no_value(
    conn: psycopg.Connection[Any], roles: dict[str, psycopg.Connection[Any]]
) -> None:
    """Bob's note, deleted by alice's cascade, cannot come back because bob
    wrote another note with the same unique body meanwhile: RZ005, nothing
    restored, and neither the error nor alice's audit rows carry bob's
    value or key."""
    alice, bob = roles["bt4_alice"], roles["bt4_bob"]
    try:
        alice.execute("insert into parent (id) values (1), (2)")
        bob.execute("insert into notes (id, parent, body) values (7, 1, %s)", (SECRET,))
        tx = begin(alice)
        execute(alice, tx, "parent", "delete", None, {"id": 1})
        bob.execute("insert into notes (id, parent, body) values (8, 2, %s)", (SECRET,))
        after_cascade = [rows_text(conn, t, "id") for t in ("parent", "notes")]
        with pytest.raises(psycopg.Error) as caught:
            call(alice, "tx_rollback", tx)
        error = caught.value
        assert error.sqlstate == "RZ005"
        visible = " ".join(
            str(part)
            for part in (
                error.diag.message_primary,
                error.diag.message_detail,
                error.diag.message_hint,
                error.diag.context,
            )
        )
        assert SECRET not in visible
        detail = json.loads(error.diag.message_detail or "{}")
        assert all(c.get("keys") is None and c.get("key") is None for c in detail["conflicts"])
        assert [rows_text(conn, t, "id") for t in ("parent", "notes")] == after_cascade
        audit = alice.execute("select detail::text from resilience.audit_log").fetchall()
        assert all(SECRET not in row[0] and '"id": 7' not in row[0] for row in audit)
    finally:
        _close(roles)


def test_column_grants_hide_columns_in_results_and_rollback_restores_them(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """A caller with UPDATE on one column and SELECT on two: tx_execute's
    result never shows the column it may not select, and the rollback
    restores the row exactly, including what a BEFORE trigger changed in
    that column (it runs as a plain write does)."""
    carol = make_role("bt4_carol", member_of=("resilience_user",))
    conn.execute("""
        create table staff (id int primary key, name text, salary numeric, touched int default 0);
        create function bump() returns trigger language plpgsql as $$
        begin new.salary := new.salary + 1; new.touched := new.touched + 1; return new; end $$;
        create trigger bump before update on staff for each row
            when (coalesce(current_setting('resilience.restoring', true), '') = '')
            execute function bump();
        insert into staff values (1, 'ann', 1000.50, 0);
        grant select (id, name), update (name) on staff to bt4_carol;
        select resilience.manage_table('staff');
    """)
    before = rows_text(conn, "staff", "id")
    with psycopg.connect(carol, autocommit=True) as caller:
        tx = begin(caller)
        result = execute(caller, tx, "staff", "update", {"name": "bo"}, {"id": 1})
        assert result["data"] == [{"id": 1, "name": "bo"}]
        assert sqlstate_of(execute, caller, tx, "staff", "update", {"salary": 1}, {"id": 1}) == (
            "42501"
        )
        assert rows_text(conn, "staff", "id") != before
        assert call(caller, "tx_rollback", tx)["success"] is True
    assert rows_text(conn, "staff", "id") == before


@pytest.mark.parametrize("new_owner", [None, "bt4_bob"])
def test_table_of_a_non_superuser_owner_rolls_back(
    conn: psycopg.Connection[Any], roles: dict[str, psycopg.Connection[Any]], new_owner: str | None
) -> None:
    """The plainest case of the bug above: no RLS on the user's table at all,
    a table owned by a role that is neither superuser nor the package owner;
    also after the table changed owner while the transaction was open. That
    used to fail with RZ005 (42501) for every transaction of the table, even
    later ones: ALTER TABLE ... OWNER TO did not regenerate (the owner was
    not part of the table's shape), so the undo stayed the old owner's, who
    no longer had any right on the table."""
    alice = roles["bt4_alice"]
    try:
        roles["bt4_owner"].execute("""
            create table plain (id int primary key, v text);
            insert into plain values (1, 'a'), (2, 'b');
            grant select, insert, update, delete on plain to bt4_alice;
            select resilience.manage_table('plain');
        """)
        before = rows_text(conn, "plain", "id")
        tx = begin(alice)
        execute(alice, tx, "plain", "update", {"v": "z"}, {"id": 1})
        execute(alice, tx, "plain", "delete", None, {"id": 2})
        execute(alice, tx, "plain", "insert", {"id": 3, "v": "c"})
        if new_owner is not None:
            conn.execute("alter table plain owner to bt4_bob")
        result = call(alice, "tx_rollback", tx)
        assert result["success"] is True and result["restored_rows"] == 3
        assert rows_text(conn, "plain", "id") == before
    finally:
        _close(roles)
