"""tx_status / tx_active show only the caller's transactions (role and JWT
subject, as PostgREST sets them), and the audit trail: one row per event,
the right actor, readable only by its actor, written by no client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from breakit10_lifecycle.support import audit, call, clients, connect, expire, sqlstate


class Request:
    """PostgREST's way: one database transaction per request, `set local
    role`, the claims with set_config(..., true)."""

    def __init__(self, conn: psycopg.Connection[Any], role: str, sub: str | None) -> None:
        self.conn, self.role, self.sub = conn, role, sub

    @contextmanager
    def open(self) -> Iterator[psycopg.Connection[Any]]:
        with self.conn.transaction():
            self.conn.execute(f"set local role {self.role}")
            claims: dict[str, Any] = {"role": self.role}
            if self.sub is not None:
                claims["sub"] = self.sub
            self.conn.execute(
                "select set_config('request.jwt.claims', %s, true),"
                " set_config('request.method', 'POST', true)",
                (json.dumps(claims),),
            )
            yield self.conn

    def __call__(self, statement: str, *args: Any) -> Any:
        with self.open() as conn:
            return call(conn, statement, *args)


EXEC = "select resilience.tx_execute(%s, "


def _table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "create table notes (id int primary key, body text not null);"
        "insert into notes values (1, 'one'), (2, 'two'), (3, 'three');"
        "select resilience.manage_table('notes');"
        "grant select, insert, update, delete on notes to authenticated, resilience_user;"
    )


def test_status_and_active_show_only_the_callers_transactions(conn, server, database, make_role):
    """A signed-in user would see (or act on) another user's transaction
    through tx_status, tx_active, the package's tables, or an error that
    tells it apart from one that does not exist (label, owner, status)."""
    dsns = clients(make_role, conn)
    _table(conn)
    with (
        psycopg.connect(server.dsn(database, user="authenticator"), autocommit=True) as pgrst,
        connect(dsns["lc_alice"]) as alice,
    ):
        u1 = Request(pgrst, "authenticated", "user-1")
        u2 = Request(pgrst, "authenticated", "user-2")
        anonymous = Request(pgrst, "authenticated", None)
        mine = u1("select resilience.tx_begin(60000, 'secret label of user 1')")
        u1("select resilience.tx_savepoint(%s, 'secret savepoint')", mine)
        u1(
            EXEC + "'notes', 'update', '{\"body\": \"x\"}', '{\"id\": 1}')",
            mine,
        )
        theirs = u2("select resilience.tx_begin(60000, 'u2')")
        alices = call(alice, "select resilience.tx_begin(60000, 'alice')")
        assert u1("select resilience.tx_status(%s)", mine)["owner_sub"] == "user-1"
        assert [t["id"] for t in u1("select jsonb_agg(t) from resilience.tx_active() t")] == [
            str(mine)
        ]
        assert [t["id"] for t in u2("select jsonb_agg(t) from resilience.tx_active() t")] == [
            str(theirs)
        ]
        assert anonymous("select count(*) from resilience.tx_active()") == 0
        assert [
            t["id"] for t in call(alice, "select jsonb_agg(t) from resilience.tx_active() t")
        ] == [str(alices)]
        missing = "00000000-0000-4000-8000-000000000000"
        for who, tx in ((u2, mine), (anonymous, mine), (u1, alices), (u1, missing)):
            for statement in (
                "select resilience.tx_status(%s)",
                "select resilience.tx_savepoint(%s, 'x')",
                "select resilience.tx_rollback_to(%s, 'secret savepoint')",
                EXEC + "'notes', 'update', '{\"body\": \"y\"}', '{\"id\": 2}')",
                "select resilience.tx_commit(%s)",
                "select resilience.tx_rollback(%s)",
            ):
                with pytest.raises(psycopg.Error) as caught:
                    who(statement, tx)
                error = caught.value
                assert error.sqlstate == "RZ001", (statement, error.sqlstate, str(error))
                text = " ".join(
                    filter(
                        None,
                        (
                            str(error),
                            error.diag.message_detail,
                            error.diag.message_hint,
                            error.diag.context,
                        ),
                    )
                )
                for secret in ("secret", "user-1", "authenticated", "lc_alice", "active"):
                    assert secret not in text, (statement, text)
        with pytest.raises(psycopg.Error) as caught:
            alice.execute("select resilience.tx_status(%s)", (mine,))
        assert caught.value.sqlstate == "RZ001"
        # The tables, read directly: own rows only.
        assert u2("select count(*) from resilience.transactions") == 1
        assert u2("select count(*) from resilience.savepoints") == 0
        assert u1("select count(*) from resilience.savepoints") == 1
        assert call(alice, "select count(*) from resilience.transactions") == 1
        assert u2("select count(*) from resilience.audit_log where tx_id = %s", mine) == 0
        assert call(conn, "select body from notes where id = 2") == "two"
        assert u1("select resilience.tx_status(%s)", mine)["status"] == "active"


def test_audit_trail_of_a_lifecycle(conn, server, database, make_role):
    """A user would see an audit event missing, doubled or misnamed, the
    wrong actor (role or JWT sub), an `execute` row for a statement that did
    not happen (a failed call, a claim conflict, a rolled-back database
    transaction), another user's rows, or be able to write the log."""
    dsns = clients(make_role, conn)
    _table(conn)
    with (
        psycopg.connect(server.dsn(database, user="authenticator"), autocommit=True) as pgrst,
        connect(dsns["lc_bob"]) as bob,
    ):
        u1 = Request(pgrst, "authenticated", "user-1")
        tx = u1("select resilience.tx_begin(60000)")
        u1(
            EXEC + "'notes', 'update', '{\"body\": \"a\"}', '{\"id\": 1}')",
            tx,
        )
        u1("select resilience.tx_savepoint(%s, 'sp')", tx)
        u1(
            'select resilience.tx_execute(%s, \'notes\', \'insert\', \'[{"id": 4, "body": "4"},'
            ' {"id": 5, "body": "5"}]\')',
            tx,
        )
        u1(EXEC + "'notes', 'lock', null, '{\"id\": 3}')", tx)
        u1(
            EXEC + "'notes', 'update', '{\"body\": \"none\"}', '{\"id\": 99}')",
            tx,
        )
        journal = call(
            conn,
            "select jsonb_agg(jsonb_build_array('public.' || relation::text, operation, row_count)"
            " order by seq) from resilience.tx_statements where tx_id = %s",
            tx,
        )
        # Calls that fail write nothing: a duplicate key, a bad column, a claim
        # held by Bob, and a call whose database transaction is rolled back.
        other = call(bob, "select resilience.tx_begin()")
        call(
            bob,
            EXEC + "'notes', 'update', '{\"body\": \"b\"}', '{\"id\": 2}')",
            other,
        )
        for statement, state in (
            (
                EXEC + "'notes', 'insert', '{\"id\": 1, \"body\": \"dup\"}')",
                "23505",
            ),
            (
                EXEC + "'notes', 'update', '{\"nope\": 1}', '{\"id\": 1}')",
                "42703",
            ),
            (
                EXEC + "'notes', 'update', '{\"body\": \"c\"}', '{\"id\": 2}')",
                "55P03",
            ),
        ):
            with sqlstate(state):
                u1(statement, tx)
        with pytest.raises(RuntimeError):
            with u1.open() as c:
                call(
                    c,
                    EXEC + "'notes', 'delete', null, '{\"id\": 3}')",
                    tx,
                )
                raise RuntimeError("the request fails after the call")
        u1("select resilience.tx_rollback_to(%s, 'sp')", tx)
        u1("select resilience.tx_commit(%s)", tx)
        trail = audit(conn, tx)
        assert [e[0] for e in trail] == [
            "begin",
            "execute",
            "savepoint",
            "execute",
            "execute",
            "execute",
            "rollback",
            "commit",
        ]
        assert {(e[1], e[2]) for e in trail} == {("authenticated", "user-1")}
        executes = [e[3] for e in trail if e[0] == "execute"]
        assert [[d["table"], d["operation"], d["rows"]] for d in executes] == journal, (
            executes,
            journal,
        )
        assert trail[2][3]["savepoint"] == "sp" and trail[6][3]["savepoint"] == "sp"
        # Readable by its actor only (role and sub).
        u2 = Request(pgrst, "authenticated", "user-2")
        assert u2("select count(*) from resilience.audit_log") == 0
        assert u1("select count(*) from resilience.audit_log") == len(trail)
        assert (
            call(bob, "select count(*) from resilience.audit_log where actor_role <> 'lc_bob'") == 0
        )
        # Written by no client, directly or through the helper.
        for who in (u1, lambda s, *a: call(bob, s, *a)):
            for statement in (
                "insert into resilience.audit_log (event, tx_id, actor_role, detail)"
                " values ('commit', gen_random_uuid(), 'x', '{}') returning id",
                "update resilience.audit_log set detail = '{}' returning id",
                "delete from resilience.audit_log returning id",
                "select resilience._audit('commit', null, '{}')",
            ):
                with sqlstate("42501"):
                    who(statement)
            with sqlstate("42501"):
                with u1.open() if who is u1 else bob.transaction():
                    (u1.conn if who is u1 else bob).execute("truncate resilience.audit_log")
        assert len(audit(conn, tx)) == len(trail)


def test_reaper_rows_belong_to_the_owner_under_jwt(conn, server, database, make_role):
    """A signed-in user would not find the `timeout` / `conflict` rows of
    their own transactions reaped inside someone else's call (or another
    user would): the reaper acts for the owner, role and JWT sub."""
    dsns = clients(make_role, conn)
    _table(conn)
    with (
        psycopg.connect(server.dsn(database, user="authenticator"), autocommit=True) as pgrst,
        connect(dsns["lc_bob"]) as bob,
    ):
        u1 = Request(pgrst, "authenticated", "user-1")
        u2 = Request(pgrst, "authenticated", "user-2")
        timed = u1("select resilience.tx_begin(60000)")
        u1(EXEC + "'notes', 'update', '{\"body\": \"t\"}', '{\"id\": 1}')", timed)
        failing = u1("select resilience.tx_begin(60000)")
        u1(EXEC + "'notes', 'update', '{\"body\": \"f\"}', '{\"id\": 2}')", failing)
        conn.execute("set session_replication_role = replica")
        conn.execute("update notes set body = 'drift' where id = 2")
        conn.execute("set session_replication_role = origin")
        expire(conn, timed)
        expire(conn, failing)
        call(bob, "select resilience.tx_begin()")  # reaps both, lazily
        for tx, event in ((timed, "timeout"), (failing, "conflict")):
            rows_seen = u1(
                "select jsonb_agg(a.event) from resilience.audit_log a where tx_id = %s", tx
            )
            assert rows_seen[-1] == event, rows_seen
            assert u2("select count(*) from resilience.audit_log where tx_id = %s", tx) == 0
            assert call(bob, "select count(*) from resilience.audit_log where tx_id = %s", tx) == 0
            last = audit(conn, tx)[-1]
            assert last[:3] == (event, "authenticated", "user-1"), last
        assert u1("select resilience.tx_status(%s)", failing)["status"] == "failed"
