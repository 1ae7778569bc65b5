"""Hostile review: each test is a broken promise of DESIGN.md section 1."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import begin, call, execute, request


@pytest.mark.parametrize(
    "raise_statement",
    [
        "raise exception using errcode = 'query_canceled', message = 'no undo'",
        "assert false, 'no undo'",
    ],
    ids=["query_canceled", "assert_failure"],
)
def test_reap_contains_undo_errors_that_when_others_does_not_catch(
    conn: psycopg.Connection[Any], make_role: Callable[..., str], raise_statement: str
) -> None:
    """Containment (DESIGN 1, Timeouts): a transaction whose undo fails for ANY
    reason becomes failed and the reaper goes on; no call of another user
    (tx_begin) ever fails because of it. PL/pgSQL `when others` catches
    neither query_canceled (57014) nor assert_failure (P0004), so a user
    trigger raising one during the undo escapes tx_reap and fails every other
    user's tx_begin, and the expired transaction stays active for good."""
    conn.execute(
        """
        create table bk_a (id int primary key, v text);
        select resilience.manage_table('bk_a');
        create function bk_a_guard() returns trigger language plpgsql as $body$
        begin
            if current_setting('resilience.restoring', true) <> '' then
                RAISE_STATEMENT;
            end if;
            return null;
        end $body$;
        create trigger bk_a_guard after delete on bk_a for each row execute function bk_a_guard();
        """.replace("RAISE_STATEMENT", raise_statement)
    )
    tx = begin(conn, 100)
    execute(conn, tx, "bk_a", "insert", {"id": 1, "v": "x"})
    time.sleep(0.3)  # let it expire (no timing is asserted)
    other = make_role("bk_other", member_of=("resilience_user",))
    with psycopg.connect(other, autocommit=True) as b:
        assert b.execute("select resilience.tx_begin()").fetchone() is not None
    assert call(conn, "tx_status", tx)["status"] == "failed"


def test_undo_does_not_run_user_triggers_with_package_privileges(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """Audit (DESIGN 1): clients can write no audit row, through any function.
    The undo runs SECURITY DEFINER as the package owner (the superuser who
    installed), and user triggers fire during it: a plain table owner's
    trigger then runs with superuser rights -- here it forges an audit row;
    it could as well `alter role ... superuser`."""
    evil = make_role("bk_evil", member_of=("resilience_user",))
    conn.execute("grant create on schema public to bk_evil")
    with psycopg.connect(evil, autocommit=True) as e:
        e.execute("""
            create table bk_evil_t (id int primary key);
            select resilience.manage_table('bk_evil_t');
            create function bk_evil_trg() returns trigger language plpgsql as $body$
            begin
                begin
                    insert into resilience.audit_log (event, actor_role, detail)
                    values ('commit', 'somebody_else', '{"forged": true}');
                exception when insufficient_privilege then
                    null;
                end;
                return null;
            end $body$;
            create trigger bk_evil_trg after delete on bk_evil_t
                for each row execute function bk_evil_trg();
        """)
        tx = begin(e)
        execute(e, tx, "bk_evil_t", "insert", {"id": 1})
        assert call(e, "tx_rollback", tx)["success"]
    forged = conn.execute(
        "select count(*) from resilience.audit_log where detail ? 'forged'"
    ).fetchone()
    assert forged == (0,)


def _type_change_while_images(conn: psycopg.Connection[Any]) -> str:
    """Table bk_tc (v int) managed; a transaction holds an image of row 1;
    then the owner widens v to bigint (the DDL goes through, the capture
    cannot be regenerated while images exist). Returns that transaction."""
    conn.execute("""
        create table bk_tc (id int primary key, v int);
        insert into bk_tc values (1, 1), (2, 2);
        select resilience.manage_table('bk_tc');
    """)
    tx = begin(conn)
    execute(conn, tx, "bk_tc", "update", {"v": 5}, {"id": 1})
    conn.execute("alter table bk_tc alter column v type bigint")
    return tx


def test_write_after_type_change_fails_clearly_not_with_stale_type(
    conn: psycopg.Connection[Any],
) -> None:
    """DESIGN 1 (storage v2): a changed table is detected at its next captured
    write (regenerated, or a clear error naming manage_table). tx_execute
    instead reads the client's value with the stale column type and fails
    with 22003 "out of range for type integer" for a value the bigint column
    accepts -- also after the image-holding transaction has committed."""
    tx = _type_change_while_images(conn)
    call(conn, "tx_commit", tx)
    tx2 = begin(conn)
    try:
        execute(conn, tx2, "bk_tc", "update", {"v": 2**40}, {"id": 2})
    except psycopg.Error as error:
        assert error.sqlstate == "RZ007", error


def test_plain_write_not_failed_by_other_users_images_after_ddl(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """DESIGN 1: no plain write of one user ever fails because of another
    user's transaction (docs: DDL changes fail captured statements with RZ007,
    "plain writes are unaffected"). After a type change while another user's
    transaction holds an image of row 1, a plain write on the unclaimed row 2
    fails with RZ007."""
    _type_change_while_images(conn)
    plain_dsn = make_role("bk_plain")
    conn.execute("grant all on bk_tc to bk_plain")
    with psycopg.connect(plain_dsn, autocommit=True) as other:
        other.execute("update bk_tc set v = 7 where id = 2")
    assert conn.execute("select v from bk_tc where id = 2").fetchone() == (7,)


def _deferred_unique_conflict(conn: psycopg.Connection[Any], timeout_ms: int) -> str:
    """A transaction moves row 1 from u = 1 to u = 5; then a plain write takes
    u = 1 (an unclaimed row, allowed). The undo must put u = 1 back, which a
    DEFERRABLE INITIALLY DEFERRED unique constraint refuses -- at commit."""
    conn.execute("""
        create table bk_du (id int primary key, u int,
            constraint bk_du_u unique (u) deferrable initially deferred);
        insert into bk_du values (1, 1);
        select resilience.manage_table('bk_du');
    """)
    tx = begin(conn, timeout_ms)
    execute(conn, tx, "bk_du", "update", {"u": 5}, {"id": 1})
    conn.execute("insert into bk_du values (2, 1)")
    return tx


def test_rollback_deferred_unique_conflict_is_rz005(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1 (Rollback): any error while restoring (unique, ...) is a
    conflict, SQLSTATE RZ005 naming the rows and the constraint. A deferred
    unique constraint is checked only at commit, after _undo has declared
    success, so tx_rollback fails with a bare 23505 instead."""
    tx = _deferred_unique_conflict(conn, 30000)
    with pytest.raises(psycopg.Error) as failure:
        call(conn, "tx_rollback", tx)
    assert failure.value.sqlstate == "RZ005"


def test_reap_contains_deferred_constraint_violation(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """Containment (DESIGN 1, Timeouts): no tx_begin of one user fails because
    of another user's transaction. The reaper's subtransaction cannot catch a
    deferred constraint violated by the undo: it fires at the COMMIT of the
    unlucky caller's tx_begin (23505, whose DETAIL even shows the other
    user's value: "Key (u)=(1) already exists"), and the expired transaction
    stays active, so every later tx_begin fails the same way."""
    tx = _deferred_unique_conflict(conn, 100)
    time.sleep(0.3)  # let it expire (no timing is asserted)
    other = make_role("bk_other", member_of=("resilience_user",))
    with psycopg.connect(other, autocommit=True) as b:
        assert b.execute("select resilience.tx_begin()").fetchone() is not None
    assert call(conn, "tx_status", tx)["status"] == "failed"


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: a user trigger's write during a restore skips the guard",
)
def test_user_trigger_during_undo_cannot_overwrite_a_row_claimed_by_another_tx(
    conn: psycopg.Connection[Any],
) -> None:
    """DESIGN 1 (Claims): any other write to a claimed row fails at once with
    55P03. Writes made by a user trigger firing during an undo run with the
    restore token set, so they are neither captured nor claim-checked: A's
    rollback (its undo deletes a row, an AFTER DELETE trigger counts
    deletions in another managed table) silently overwrites the row B holds.
    The same trigger in a plain write or in A's own tx_execute gets 55P03."""
    conn.execute("""
        create table bk_items (id int primary key);
        create table bk_counter (id int primary key, deleted int);
        insert into bk_counter values (1, 0);
        create function bk_count_deletes() returns trigger language plpgsql as $body$
        begin
            update public.bk_counter set deleted = deleted + 1 where id = 1;
            return null;
        end $body$;
        create trigger bk_count_deletes after delete on bk_items
            for each row execute function bk_count_deletes();
        select resilience.manage_table('bk_items');
        select resilience.manage_table('bk_counter');
    """)
    tx_a = begin(conn)
    tx_b = begin(conn)
    execute(conn, tx_a, "bk_items", "insert", {"id": 1})
    execute(conn, tx_b, "bk_counter", "update", {"deleted": 100}, {"id": 1})
    try:
        call(conn, "tx_rollback", tx_a)
    except psycopg.Error as error:
        assert error.sqlstate in ("RZ005", "55P03"), error
    assert conn.execute("select deleted from bk_counter").fetchall() == [(100,)]


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: lock needs a table SELECT grant (tableoid, ctid)",
)
def test_lock_works_with_column_grants_like_select_for_update(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """DESIGN 1: `lock` is the logical SELECT ... FOR UPDATE, run with the
    caller's privileges. A role with column grants SELECT (id, v) and
    UPDATE (v) may run `select id, v from t where id = 2 for update nowait`,
    but tx_execute(..., 'lock', ...) fails with 42501 for it: the generated
    statement reads the system columns tableoid/ctid, which need a table-level
    SELECT grant. (update/insert/delete/upsert work for the same role.)"""
    role_dsn = make_role("bk_col", member_of=("resilience_user",))
    conn.execute("""
        create table bk_cg (id int primary key, v text, secret text);
        insert into bk_cg values (2, 'b', 'hidden');
        select resilience.manage_table('bk_cg');
        grant select (id, v), update (v) on bk_cg to bk_col;
    """)
    with psycopg.connect(role_dsn, autocommit=True) as caller:
        with caller.transaction():
            plain = caller.execute("select id, v from bk_cg where id = 2 for update nowait")
            assert plain.fetchall() == [(2, "b")]
        tx = begin(caller)
        locked = execute(caller, tx, "bk_cg", "lock", None, {"id": 2})
    assert locked["data"] == [{"id": 2, "v": "b"}]


@pytest.mark.xfail(
    strict=True, reason="known limitation: tx_execute pins search_path (hijack-proof)"
)
def test_tx_execute_applies_rls_as_a_plain_write_does(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1: tx_execute runs the write with the caller's privileges, so
    the table's grants and RLS apply. A policy calling a helper function that
    names its table unqualified (resolved by the caller's search_path) lets
    the caller's plain UPDATE through, but tx_execute pins search_path = ''
    (it is SECURITY INVOKER, the house rule asks it only of DEFINER) and fails
    with 42P01. User triggers with unqualified names fail the same way."""
    conn.execute("""
        create table bk_tenant_of (sub text primary key, tenant int);
        insert into bk_tenant_of values ('alice', 1);
        create function bk_my_tenant() returns int language sql stable as $body$
            select tenant from bk_tenant_of
            where sub = current_setting('request.jwt.claims', true)::json ->> 'sub'
        $body$;
        create table bk_docs (id int primary key, tenant int, body text);
        insert into bk_docs values (1, 1, 'mine'), (2, 2, 'theirs');
        alter table bk_docs enable row level security;
        create policy bk_docs_tenant on bk_docs using (tenant = bk_my_tenant());
        grant select on bk_tenant_of to authenticated;
        grant all on bk_docs to authenticated;
        select resilience.manage_table('bk_docs');
    """)
    assert request(
        conn, "alice", "update bk_docs set body = 'plain' where id in (1, 2) returning id"
    ) == [(1,)]
    tx = str(request(conn, "alice", "select resilience.tx_begin()")[0][0])
    result = request(
        conn,
        "alice",
        "select resilience.tx_execute(%s, 'bk_docs', 'update', %s, %s)",
        params=(tx, Jsonb({"body": "tx"}), Jsonb({"id": 1})),
    )
    assert result[0][0]["count"] == 1


def test_partition_created_after_manage_table_is_captured(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1 (storage v2) + docs "DDL on managed tables": capture on the
    parent covers every partition, a statement aimed at a partition is
    captured, and with the event triggers (installed here: superuser) DDL on
    a managed table or a partition of one regenerates its code at once. A
    partition created after manage_table gets no capture triggers: a write
    aimed at it inside the logical transaction is not captured, and
    tx_rollback reports success while the row stays changed. (Writes through
    the parent fail with RZ007 until manage_table is run again by hand.)"""
    conn.execute("""
        create table bk_np (k int, id int, v text, primary key (k, id)) partition by list (k);
        create table bk_np1 partition of bk_np for values in (1);
        select resilience.manage_table('bk_np');
        create table bk_np2 partition of bk_np for values in (2);
        insert into bk_np values (2, 2, 'before');
    """)
    tx = begin(conn)
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        conn.execute("update bk_np2 set v = 'during'")
    result = call(conn, "tx_rollback", tx)
    assert result["success"]
    assert conn.execute("select t::text from bk_np as t").fetchall() == [("(2,2,before)",)]


def test_identity_always_key_change_rolls_back(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1: identity (GENERATED ALWAYS) columns must round-trip; rollback
    restores everything or nothing and never reports success over a changed
    row (docs: an identity column is restored by re-insert). A key change
    `set id = default` on a GENERATED ALWAYS key is rolled back with
    success = true, yet the row keeps its new key 3 instead of 1. With an
    ON UPDATE CASCADE child, the same rollback fails with RZ005 instead."""
    conn.execute("""
        create table bk_ida (id int generated always as identity primary key, v text);
        insert into bk_ida (v) values ('a'), ('b');
        select resilience.manage_table('bk_ida');
    """)
    before = conn.execute("select t::text from bk_ida as t order by 1").fetchall()
    tx = begin(conn)
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        conn.execute("update bk_ida set id = default where id = 1")
    # PostgreSQL cannot write a GENERATED ALWAYS column back with an UPDATE:
    # the rollback refuses (RZ005, nothing restored) instead of reporting
    # success over a row it could not restore (docs/transactions.md).
    during = conn.execute("select t::text from bk_ida as t order by 1").fetchall()
    with pytest.raises(psycopg.Error) as caught:
        call(conn, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    assert conn.execute("select t::text from bk_ida as t order by 1").fetchall() == during
    assert during != before


def test_identity_always_non_key_column_rolls_back(conn: psycopg.Connection[Any]) -> None:
    """Same promise as above, without a key change: `set n = default` on a
    GENERATED ALWAYS identity column that is not the key. tx_rollback
    restores v but leaves n at its new value (2, not 1), and says success."""
    conn.execute("""
        create table bk_idn (id int primary key, n int generated always as identity, v text);
        insert into bk_idn (id, v) values (1, 'a');
        select resilience.manage_table('bk_idn');
    """)
    before = conn.execute("select t::text from bk_idn as t").fetchall()
    tx = begin(conn)
    with conn.transaction():
        conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
        conn.execute("update bk_idn set n = default, v = 'b' where id = 1")
    during = conn.execute("select t::text from bk_idn as t").fetchall()
    with pytest.raises(psycopg.Error) as caught:
        call(conn, "tx_rollback", tx)
    assert caught.value.sqlstate == "RZ005"
    assert conn.execute("select t::text from bk_idn as t").fetchall() == during != before


def test_truncate_inside_a_logical_transaction_is_not_lost(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1: a write on a managed table is part of the logical transaction
    when resilience.tx_id holds its id, and tx_rollback restores everything
    (a restore never skips a row silently). TRUNCATE in the transaction (the
    table has no claims yet, so the BEFORE TRUNCATE guard lets it through) is
    neither captured nor refused: tx_rollback says success, 0 rows restored,
    and the rows are gone. Expected: refused, or captured and restored."""
    conn.execute("""
        create table bk_tt (id int primary key, v text);
        insert into bk_tt values (1, 'a');
        select resilience.manage_table('bk_tt');
    """)
    tx = begin(conn)
    try:
        with conn.transaction():
            conn.execute("select set_config('resilience.tx_id', %s, true)", (tx,))
            conn.execute("truncate bk_tt")
    except psycopg.Error:
        pass  # refusing the truncate keeps the promise too
    call(conn, "tx_rollback", tx)
    assert conn.execute("select t::text from bk_tt as t").fetchall() == [("(1,a)",)]


def test_truncate_is_refused_only_by_the_header_itself(conn: psycopg.Connection[Any]) -> None:
    """A request whose headers merely mention x-resilience-tx in another
    header's value is no logical transaction: its TRUNCATE goes through (as
    its writes are plain); the header itself makes it 0A000."""
    conn.execute("""
        create table bk_th (id int primary key, v text);
        insert into bk_th values (1, 'a');
        select resilience.manage_table('bk_th');
    """)
    tx = begin(conn)
    with conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            ('{"x-note": "see x-resilience-tx", "x-resilience-tx": ""}',),
        )
        conn.execute("truncate bk_th")
    assert conn.execute("select count(*) from bk_th").fetchone() == (0,)
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(
            "select set_config('request.headers', %s, true)",
            (json.dumps({"x-resilience-tx": tx}),),
        )
        conn.execute("truncate bk_th")
    assert caught.value.sqlstate == "0A000"


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: lock in a subtransaction (xmax is the subxact's)",
)
def test_lock_inside_a_plpgsql_exception_block(conn: psycopg.Connection[Any]) -> None:
    """DESIGN 1: operation `lock` claims the matched rows and returns them
    (the logical SELECT ... FOR UPDATE). Called from a PL/pgSQL block with an
    EXCEPTION clause (a subtransaction, as in many RPC functions) or after a
    SAVEPOINT, the row's xmax is the subtransaction's xid, not
    pg_current_xact_id(), so _lock_<n> finds nothing it locked and fails with
    55P03 "rows must be locked by this statement" though nobody else holds
    the row. A plain SELECT ... FOR UPDATE works there."""
    conn.execute("""
        create table bk_ls (id int primary key, v text);
        insert into bk_ls values (1, 'a');
        select resilience.manage_table('bk_ls');
    """)
    conn.execute("""
        create function bk_lock_rpc(tx uuid) returns jsonb language plpgsql as $body$
        begin
            return resilience.tx_execute(tx, 'bk_ls', 'lock', null, '{"id": 1}');
        exception when division_by_zero then
            return null;
        end $body$;
    """)
    tx = begin(conn)
    locked = conn.execute("select bk_lock_rpc(%s)", (tx,)).fetchone()
    assert locked is not None and locked[0]["count"] == 1
    assert call(conn, "tx_status", tx)["claims"] == 1


def test_an_inheritance_parent_is_refused_since_its_children_could_bypass_claims(
    conn: psycopg.Connection[Any],
) -> None:
    """DESIGN 1: any other write to a claimed row fails at once with 55P03.
    A plain write aimed at an inheritance child takes the child's own
    statement, which the parent's triggers never see: a managed parent's
    claims could be bypassed. So a table with inheritance children is
    refused (22023, the hint points at partitioning), and nothing is
    generated for it."""
    conn.execute("""
        create table bk_ih (id int primary key, v text);
        create table bk_ihc (extra int) inherits (bk_ih);
        insert into bk_ihc values (2, 'child', 0);
    """)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select resilience.manage_table('bk_ih')")
    assert caught.value.sqlstate == "22023"
    assert "partition" in (caught.value.diag.message_hint or "")
    assert conn.execute("select count(*) from resilience.managed_tables").fetchone() == (0,)
