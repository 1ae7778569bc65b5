"""A second pair of eyes on issue #11's hot path (commit 42ca1ef): each test
attacks one promise of the changed code, written from the contract
(DESIGN.md section 1, docs/transactions.md) rather than from our examples.

1. The capture trigger decides inline: captured (setting `resilience.tx_id`
   or PostgREST's `x-resilience-tx` header), our own restore (a token), or a
   plain write that only claimed rows refuse (55P03).
2. The journal row and the `execute` audit row are written by generated code
   in one statement, the actor being the transaction's owner.
3. A one-object insert is a plain `INSERT ... SELECT ... FROM jsonb_to_record
   ... RETURNING`; it must behave exactly like the general path (an array of
   one row) and like a plain INSERT ... RETURNING.
4. `_lock_<n>` matches ctids and tableoids separately and refuses a count
   that differs; it must claim exactly the rows the caller's statement
   locked, never others.

Requests "as PostgREST sends them" log in as `authenticator` and run one
database transaction with `set_config(..., true)` of role,
`request.jwt.claims` and `request.headers`, as PostgREST does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from conftest import Server
from psycopg import sql
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]


@pytest.fixture
def rest(server: Server, database: str) -> Callable[..., Any]:
    """rest(sub, tx=None, role='authenticated'): a context manager giving a
    connection inside one database transaction set up as a PostgREST
    request (role, JWT claims, headers; the header names `tx` when given)."""

    @contextmanager
    def request(
        sub: str | None, tx: Any = None, role: str = "authenticated", headers: Any = None
    ) -> Iterator[Conn]:
        hdrs = dict(headers or {})
        if tx is not None:
            hdrs["x-resilience-tx"] = str(tx)
        claims = {"role": role} if sub is None else {"role": role, "sub": sub}
        with psycopg.connect(server.dsn(database, user="authenticator")) as c:
            c.execute(
                "select set_config('search_path', 'public', true),"
                " set_config('role', %s, true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.headers', %s, true)",
                (role, json.dumps(claims), json.dumps(hdrs)),
            )
            yield c

    return request


def begin(rest: Callable[..., Any], sub: str | None) -> Any:
    with rest(sub) as c:
        return one(c, "select resilience.tx_begin()")


def one(c: Conn, query: str, params: Any = None) -> Any:
    row = c.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def execute(c: Conn, tx: Any, table: str, op: str, data: Any = None, match: Any = None) -> Any:
    return one(
        c,
        "select resilience.tx_execute(%s, %s, %s, %s, %s)",
        (
            tx,
            table,
            op,
            None if data is None else Jsonb(data),
            None if match is None else Jsonb(match),
        ),
    )


def sqlstate_of(c: Conn, query: str, params: Any = None) -> str | None:
    """Runs query in a savepoint; its SQLSTATE, or None when it succeeded."""
    try:
        with c.transaction():
            c.execute(query, params)
    except psycopg.Error as e:
        return e.sqlstate
    return None


def probe(c: Conn, query: str, params: Any = None) -> str | None:
    """As sqlstate_of, but undoes the statement whatever its outcome."""
    try:
        with c.transaction(force_rollback=True):
            c.execute(query, params)
    except psycopg.Error as e:
        return e.sqlstate
    return None


def claimed_keys(conn: Conn, tx: Any) -> set[Any]:
    """Keys (the `id` column) claimed by tx, across managed tables."""
    rows = conn.execute(
        "select c.key from resilience._claims() as c where c.tx_id = %s", (tx,)
    ).fetchall()
    return {r[0]["id"] for r in rows}


# --- 4. lock ---------------------------------------------------------------


@pytest.fixture
def parts(conn: Conn) -> dict[str, int]:
    """A managed partitioned table whose two partitions hold rows at the same
    ctids: (0,1) and (0,2) in each."""
    conn.execute(
        """
        create table public.pt (id integer primary key, grp integer not null, v text)
            partition by range (id);
        create table public.pt_a partition of public.pt for values from (0) to (100);
        create table public.pt_b partition of public.pt for values from (100) to (200);
        insert into public.pt values (1, 10, 'a1'), (2, 20, 'a2'), (101, 20, 'b1'), (102, 10, 'b2');
        grant select, insert, update, delete
            on public.pt, public.pt_a, public.pt_b to authenticated;
        select resilience.manage_table('public.pt');
        """
    )
    ctids = dict(conn.execute("select id, ctid::text from public.pt").fetchall())
    assert ctids == {1: "(0,1)", 2: "(0,2)", 101: "(0,1)", 102: "(0,2)"}
    return {
        "pt_a": one(conn, "select 'public.pt_a'::regclass::oid"),
        "pt_b": one(conn, "select 'public.pt_b'::regclass::oid"),
    }


def test_lock_across_partitions_after_an_earlier_lock_at_the_same_ctid(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    """One request locks row 1 (pt_a, ctid (0,1)), then rows 2 (pt_a, (0,2))
    and 101 (pt_b, (0,1)) in one call: (pt_a, (0,1)) matches the second
    call's ctids and tableoids too. The lock must still succeed and claim
    exactly 1, 2 and 101 (nobody else holds a claim: no 55P03)."""
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        assert execute(c, tx, "pt", "lock", match={"id": 1})["count"] == 1
        locked = execute(c, tx, "pt", "lock", match={"grp": 20})
        assert sorted(r["id"] for r in locked["data"]) == [2, 101]
    assert claimed_keys(conn, tx) == {1, 2, 101}


def test_lock_claims_exactly_the_rows_it_returns_after_a_savepoint(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    """Rows 2 (pt_a, (0,2)) and 101 (pt_b, (0,1)) are locked at top level;
    then, in a savepoint (a client's nested transaction, a PL/pgSQL
    exception block), the caller locks rows 1 (pt_a, (0,1)) and 102 (pt_b,
    (0,2)): their xmax is the subtransaction's, while (pt_a, (0,2)) and
    (pt_b, (0,1)) carry the top transaction's, so the counts agree. Whatever
    lock answers, it must never report rows 1 and 102 locked while claiming
    2 and 101 instead: another transaction could then overwrite row 1."""
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("select id from public.pt where id in (2, 101) for update")
        state = None
        result = None
        try:
            with c.transaction():
                result = execute(c, tx, "pt", "lock", match={"grp": 10})
        except psycopg.Error as e:
            state = e.sqlstate
    claimed = claimed_keys(conn, tx)
    if state is None:
        assert result is not None
        assert sorted(r["id"] for r in result["data"]) == [1, 102]
        assert claimed == {1, 102}
    else:
        assert state == "55P03"
        assert claimed == set()
    # Row 1 is either claimed by alice (55P03) or was never reported locked.
    other = begin(rest, "bob")
    with rest("bob", other) as c:
        got = sqlstate_of(c, "update public.pt set v = 'bob' where id = 1")
    assert got == ("55P03" if state is None else None)


def lock_function(conn: Conn, table: str) -> str:
    return str(
        one(
            conn,
            "select m.lock_function::oid::regproc::text from resilience.managed_tables as m"
            " where m.relation = %s::regclass",
            (table,),
        )
    )


def journal(conn: Conn, tx: Any) -> list[tuple[str, int]]:
    return conn.execute(
        "select s.operation, s.row_count from resilience.tx_statements as s"
        " where s.tx_id = %s order by s.seq",
        (tx,),
    ).fetchall()


def execute_audit(conn: Conn, tx: Any) -> list[tuple[Any, ...]]:
    """(operation, rows, via, actor_role, actor_sub) of tx's 'execute' audit rows."""
    return conn.execute(
        "select a.detail ->> 'operation', (a.detail ->> 'rows')::int, a.detail ->> 'via',"
        " a.actor_role, a.actor_sub from resilience.audit_log as a"
        " where a.event = 'execute' and a.tx_id = %s order by a.id",
        (tx,),
    ).fetchall()


def test_lock_of_many_rows_across_partitions_claims_exactly_them(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    conn.execute(
        "insert into public.pt select g, 30, 'x' from generate_series(3, 99) as g;"
        " insert into public.pt select g, 30, 'x' from generate_series(103, 199) as g;"
        " update public.pt set v = 'y' where id in (50, 150)"  # new ctids, dead tuples behind
    )
    expected = {r[0] for r in conn.execute("select id from public.pt where grp = 30")}
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        result = execute(c, tx, "pt", "lock", match={"grp": 30})
    assert result["count"] == len(expected) == 194
    assert {r["id"] for r in result["data"]} == expected
    assert claimed_keys(conn, tx) == expected
    assert journal(conn, tx) == [("lock", 194)]


def test_lock_matching_nothing_claims_and_records_nothing(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        assert execute(c, tx, "pt", "lock", match={"grp": 99}) == {
            "success": True,
            "data": [],
            "count": 0,
        }
    assert claimed_keys(conn, tx) == set()
    assert journal(conn, tx) == []
    assert execute_audit(conn, tx) == []
    assert one(conn, "select count(*) from resilience.claimed_tables where tx_id = %s", (tx,)) == 0


def test_direct_lock_call_with_forged_ctids_claims_nothing(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    """_lock_<n> is callable by clients (tx_execute runs as the caller). Rows
    the caller did not lock, rows another session locked, pairs of another
    table, duplicates, a mix of locked and unlocked rows: 55P03, nothing
    claimed; someone else's transaction: RZ001."""
    fn = lock_function(conn, "public.pt")
    a, b = parts["pt_a"], parts["pt_b"]
    call = f"select {fn}(%s, %s::oid[], %s::tid[])"
    tx = begin(rest, "alice")
    with psycopg.connect(conn.info.dsn) as holder:  # another session locks row 2
        holder.execute("select 1 from public.pt where id = 2 for update")
        with rest("alice", tx) as c:
            assert sqlstate_of(c, call, (tx, [a], ["(0,1)"])) == "55P03"  # not locked
            assert sqlstate_of(c, call, (tx, [a], ["(0,2)"])) == "55P03"  # locked by another
            c.execute("select 1 from public.pt where id = 1 for update")
            assert sqlstate_of(c, call, (tx, [b], ["(0,1)"])) == "55P03"  # row 101, not 1
            assert sqlstate_of(c, call, (tx, [a, b], ["(0,1)", "(0,1)"])) == "55P03"
            assert sqlstate_of(c, call, (tx, [a, a], ["(0,1)", "(0,1)"])) == "55P03"
            assert sqlstate_of(c, call, (tx, [a, a], ["(0,1)", "(0,2)"])) == "55P03"
            other = one(conn, "select 'public.pt'::regclass::oid")
            assert sqlstate_of(c, call, (tx, [other], ["(0,1)"])) == "55P03"
            bob = begin(rest, "bob")
            assert sqlstate_of(c, call, (bob, [a], ["(0,1)"])) == "RZ001"
            # The one call that names exactly what this transaction locked.
            assert one(c, call, (tx, [a], ["(0,1)"])) == 1
    assert claimed_keys(conn, tx) == {1}
    assert journal(conn, tx) == [("lock", 1)]


def test_direct_lock_call_cannot_claim_a_row_only_a_foreign_key_check_locked(
    conn: Conn, rest: Callable[..., Any]
) -> None:
    """alice may read `parent` but not update it (so she cannot lock it FOR
    UPDATE) and may insert into `child`. Inserting a child row makes the
    foreign-key check lock the parent row FOR KEY SHARE in her transaction
    (xmax = her xid). Calling _lock_<n> on that row must not claim it: a
    claim would block every other writer of a row she may not write."""
    conn.execute(
        """
        create table public.parent (id integer primary key, v text);
        create table public.child (id integer primary key,
            parent_id integer not null references public.parent);
        insert into public.parent values (1, 'p');
        grant select on public.parent to authenticated;
        grant select, insert on public.child to authenticated;
        select resilience.manage_table('public.parent');
        """
    )
    fn = lock_function(conn, "public.parent")
    ctid = one(conn, "select ctid::text from public.parent where id = 1")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        assert sqlstate_of(c, "select 1 from public.parent where id = 1 for update") == "42501"
        c.execute("insert into public.child values (1, 1)")
        state = sqlstate_of(
            c,
            f"select {fn}(%s, %s::oid[], %s::tid[])",
            (tx, [one(conn, "select 'public.parent'::regclass::oid")], [ctid]),
        )
    assert state == "42501"
    assert claimed_keys(conn, tx) == set()


# --- 1. capture decides inline ---------------------------------------------


@pytest.fixture
def acct(conn: Conn) -> None:
    conn.execute(
        """
        create table public.acct (id integer primary key, n integer not null check (n >= 0));
        insert into public.acct select g, g from generate_series(1, 9) as g;
        grant select, insert, update, delete on public.acct to authenticated, service_role;
        select resilience.manage_table('public.acct');
        create table public.other (id integer primary key, n integer);
        insert into public.other values (1, 1);
        grant select, insert, update, delete on public.other to authenticated;
        select resilience.manage_table('public.other');
        """
    )


def snapshot(conn: Conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"select t::text from {table} as t order by t.id")]


def test_plain_writes_refuse_claimed_rows_and_nothing_else(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice") as c:
        execute(c, tx, "acct", "update", {"n": 100}, {"id": 1})
        execute(c, tx, "acct", "delete", match={"id": 2})
        execute(c, tx, "acct", "update", {"id": 30}, {"id": 3})  # claims 3 and 30
        execute(c, tx, "acct", "lock", match={"id": 4})
    refused = [
        "update public.acct set n = 0 where id = 1",
        "delete from public.acct where id = 1",
        "insert into public.acct values (2, 2)",
        "insert into public.acct values (3, 3)",
        "update public.acct set n = 0 where id = 30",
        "update public.acct set n = 0 where id = 4",
        "update public.acct set n = n + 1 where id in (5, 1)",
        "update public.acct set id = 2 where id = 5",  # into a claimed key
        "insert into public.acct values (31, 0) on conflict (id) do update set n = 0",  # fine
    ]
    allowed = [
        "update public.acct set n = 0 where id = 5",
        "delete from public.acct where id = 6",
        "insert into public.acct values (10, 10)",
        "update public.acct set n = 0 where false",
        "update public.acct set id = 11 where id = 7",
        "update public.other set n = 0 where id = 1",
    ]
    expected = {q: "55P03" for q in refused[:-1]} | {refused[-1]: None}
    expected |= {q: None for q in allowed}
    for who in ("bob", "alice"):  # even the holder, outside its transaction
        with rest(who) as c:
            c.execute("select set_config('resilience.tx_id', '', true)")
            assert {q: probe(c, q) for q in expected} == expected
    # A superuser session is a plain writer too.
    assert sqlstate_of(conn, "update public.acct set n = 0 where id = 1") == "55P03"


def test_header_mode_is_captured_and_rolls_back_exactly(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    before = snapshot(conn, "public.acct")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("insert into public.acct values (20, 20), (21, 21)")
        c.execute("update public.acct set n = n * 2 where id <= 3")
        c.execute("update public.acct set id = 40 where id = 4")
        c.execute("delete from public.acct where id = 5")
        c.execute("update public.acct set n = 0 where false")
    assert journal(conn, tx) == [
        ("insert", 2),
        ("update", 3),
        ("update", 1),
        ("delete", 1),
        ("update", 0),
    ]
    assert [a[2] for a in execute_audit(conn, tx)] == ["header"] * 5
    with rest("bob") as c:  # claimed, old key of the key change included
        assert sqlstate_of(c, "insert into public.acct values (4, 4)") == "55P03"
    with rest("alice") as c:
        assert one(c, "select resilience.tx_rollback(%s)", (tx,))["success"] is True
    assert snapshot(conn, "public.acct") == before
    assert claimed_keys(conn, tx) == set()


@pytest.mark.parametrize(
    "header",
    ["bob's", "unknown", "garbage", "committed", "uppercase-bob's"],
)
def test_header_naming_a_transaction_the_caller_may_not_use_fails_the_write(
    conn: Conn, rest: Callable[..., Any], acct: None, header: str
) -> None:
    bob = begin(rest, "bob")
    done = begin(rest, "alice")
    with rest("alice") as c:
        c.execute("select resilience.tx_commit(%s)", (done,))
    value = {
        "bob's": str(bob),
        "unknown": "00000000-0000-4000-8000-000000000000",
        "garbage": "x'); drop table public.acct; --",
        "committed": str(done),
        "uppercase-bob's": str(bob).upper(),
    }[header]
    before = snapshot(conn, "public.acct")
    with rest("alice", value) as c:
        state = sqlstate_of(c, "update public.acct set n = 0 where id = 8")
    assert state == ("RZ002" if header == "committed" else "RZ001")
    assert snapshot(conn, "public.acct") == before
    assert journal(conn, bob) == []


def test_empty_or_unrelated_header_is_a_plain_write(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice") as c:
        execute(c, tx, "acct", "update", {"n": 100}, {"id": 1})
    for headers in (
        {"x-resilience-tx": ""},
        {"referer": "https://x/?x-resilience-tx=1", "prefer": "x-resilience-tx"},
        {"x-resilience-txn": str(tx)},
    ):
        with rest("bob", headers=headers) as c:
            assert sqlstate_of(c, "update public.acct set n = 0 where id = 8") is None
            assert sqlstate_of(c, "update public.acct set n = 0 where id = 1") == "55P03"
    assert journal(conn, tx) == [("update", 1)]


def test_forged_settings_neither_escape_capture_nor_claims(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    """resilience.tx_id naming someone else's transaction: RZ001. A forged
    resilience.restoring (any value but a running restore's token) neither
    lifts a claim nor keeps a write out of the transaction it belongs to."""
    alice = begin(rest, "alice")
    bob = begin(rest, "bob")
    with rest("alice") as c:
        execute(c, alice, "acct", "update", {"n": 100}, {"id": 1})
    forged = ["00000000-0000-4000-8000-000000000000", str(alice), str(bob), "x", "on"]
    with rest("bob") as c:
        c.execute("select set_config('resilience.tx_id', %s, true)", (str(alice),))
        assert sqlstate_of(c, "update public.acct set n = 0 where id = 8") == "RZ001"
        c.execute("select set_config('resilience.tx_id', '', true)")
        assert sqlstate_of(c, "select * from resilience.restore_tokens") == "42501"
        for value in forged:
            c.execute("select set_config('resilience.restoring', %s, true)", (value,))
            assert sqlstate_of(c, "update public.acct set n = 0 where id = 1") == "55P03"
            assert sqlstate_of(c, "truncate public.acct") is not None
    before = snapshot(conn, "public.acct")
    with rest("bob", bob) as c:
        for i, value in enumerate(forged):
            c.execute("select set_config('resilience.restoring', %s, true)", (value,))
            c.execute("update public.acct set n = n + 1 where id = %s", (5 + i % 3,))
    assert journal(conn, bob) == [("update", 1)] * len(forged)
    with rest("bob") as c:
        c.execute("select resilience.tx_rollback(%s)", (bob,))
    assert snapshot(conn, "public.acct") == before


def test_partitions_capture_and_guard_against_the_parent(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    before = snapshot(conn, "public.pt")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.pt_b set v = 'alice' where id = 101")  # aimed at a partition
        c.execute("insert into public.pt_a values (50, 1, 'new')")
        c.execute("update public.pt set id = 150 where id = 2")  # moves pt_a -> pt_b
    assert conn.execute(
        "select distinct relation::text from resilience.tx_statements where tx_id = %s", (tx,)
    ).fetchall() == [("pt",)]
    assert claimed_keys(conn, tx) == {101, 50, 2, 150}
    with rest("bob") as c:
        for q in (
            "update public.pt_b set v = 'bob' where id = 101",
            "update public.pt set v = 'bob' where id = 101",
            "delete from public.pt_a where id = 50",
            "insert into public.pt_a values (2, 0, 'bob')",
            "delete from public.pt_b where id = 150",
        ):
            assert probe(c, q) == "55P03", q
        assert probe(c, "update public.pt_b set v = 'bob' where id = 102") is None
        assert probe(c, "update public.pt_a set v = 'bob' where id = 1") is None
    with rest("alice") as c:
        c.execute("select resilience.tx_rollback(%s)", (tx,))
    assert snapshot(conn, "public.pt") == before


def test_a_table_no_longer_managed_is_written_freely(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice") as c:
        execute(c, tx, "acct", "update", {"n": 100}, {"id": 1})
        c.execute("select resilience.tx_commit(%s)", (tx,))
    conn.execute("select resilience.unmanage_table('public.acct')")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.acct set n = 0 where id = 1")
        assert (
            sqlstate_of(
                c, "select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 2}')", (tx,)
            )
            == "22023"
        )
    assert journal(conn, tx) == []
    with rest("bob", "00000000-0000-4000-8000-000000000000") as c:
        assert sqlstate_of(c, "update public.acct set n = 1 where id = 1") is None


def test_a_detached_partition_is_no_longer_captured_nor_guarded(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    conn.execute("alter table public.pt detach partition public.pt_b")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.pt_b set v = 'alice' where id = 101")
        c.execute("update public.pt set v = 'alice' where id = 1")
    assert journal(conn, tx) == [("update", 1)]
    assert claimed_keys(conn, tx) == {1}
    with rest("bob") as c:
        assert sqlstate_of(c, "update public.pt_b set v = 'bob' where id = 1") is None
        assert sqlstate_of(c, "update public.pt set v = 'bob' where id = 1") == "55P03"


def test_ddl_on_a_managed_table_during_a_transaction(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    before = snapshot(conn, "public.acct")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.acct set n = 50 where id = 1")
    conn.execute("alter table public.acct add column note text default 'x'")
    with rest("alice", tx) as c:
        c.execute("update public.acct set note = 'alice' where id = 2")
        c.execute("insert into public.acct values (20, 20, 'new')")
    with rest("bob") as c:
        assert sqlstate_of(c, "update public.acct set n = 0 where id = 1") == "55P03"
        assert sqlstate_of(c, "update public.acct set note = 'bob' where id = 3") is None
    conn.execute("update public.acct set note = 'x' where id = 3")
    with rest("alice") as c:
        state = sqlstate_of(c, "select resilience.tx_rollback(%s)", (tx,))
    # The image of row 1 predates the column: a conflict (documented), never a
    # silent partial restore; force restores it with the new column null.
    assert state == "RZ005"
    with rest("alice") as c:
        c.execute("select resilience.tx_rollback(%s, force => true)", (tx,))
    restored = snapshot(conn, "public.acct")
    assert restored[0] == "(1,1,)"
    assert restored[1:] == [r[:-1] + ",x)" for r in before[1:]]


def test_ddl_without_the_event_trigger_fails_captured_writes_only(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.acct set n = 50 where id = 1")
    conn.execute(
        "alter event trigger resilience_managed_ddl_end disable;"
        " alter table public.acct add column note text"
    )
    with rest("alice", tx) as c:
        assert sqlstate_of(c, "update public.acct set n = 51 where id = 2") == "RZ007"
    with rest("alice") as c:
        assert (
            sqlstate_of(
                c,
                "select resilience.tx_execute(%s, 'acct', 'update', '{\"n\": 1}', '{\"id\": 2}')",
                (tx,),
            )
            == "RZ007"
        )
    with rest("bob") as c:
        assert sqlstate_of(c, "update public.acct set n = 0 where id = 1") == "55P03"
        assert sqlstate_of(c, "update public.acct set n = 0 where id = 3") is None
    assert journal(conn, tx) == [("update", 1)]


# --- 2. journal + execute audit row in one statement ------------------------


def test_execute_audit_rows_are_the_statements_that_ran_with_the_owner_as_actor(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("insert into public.acct values (20, 20), (21, 21)")
    with rest("alice") as c:
        execute(c, tx, "acct", "update", {"n": 7}, {"n": 7})
        execute(c, tx, "acct", "lock", match={"id": 8})
        execute(c, tx, "acct", "lock", match={"id": 99})  # nothing locked: no statement
        execute(c, tx, "acct", "delete", match={"id": 99})  # ran, no row
        execute(c, tx, "acct", "insert", {"id": 22, "n": 1})
    rows = [
        ("insert", 2, "header"),
        ("update", 1, "tx_execute"),
        ("lock", 1, "tx_execute"),
        ("delete", 0, "tx_execute"),
        ("insert", 1, "tx_execute"),
    ]
    assert journal(conn, tx) == [(op, n) for op, n, _ in rows]
    assert execute_audit(conn, tx) == [(*r, "authenticated", "alice") for r in rows]
    # A caller without a JWT subject (service_role, a plain role).
    with rest(None, role="service_role") as c:
        svc = one(c, "select resilience.tx_begin()")
        execute(c, svc, "acct", "update", {"n": 8}, {"id": 8 + 1})
    assert execute_audit(conn, svc) == [("update", 1, "tx_execute", "service_role", None)]
    # Each owner reads their own execute rows only.
    with rest("bob") as c:
        assert one(c, "select count(*) from resilience.audit_log where tx_id = %s", (tx,)) == 0
    with rest("alice") as c:
        assert (
            one(
                c,
                "select count(*) from resilience.audit_log where tx_id = %s and event = 'execute'",
                (tx,),
            )
            == 5
        )


def test_a_failed_statement_leaves_no_audit_or_journal_row(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    bob = begin(rest, "bob")
    with rest("bob") as c:
        execute(c, bob, "acct", "update", {"n": 0}, {"id": 9})
    tx = begin(rest, "alice")
    with psycopg.connect(conn.info.dsn) as holder:  # another session is writing row 8
        holder.execute("update public.acct set n = n where id = 8")
        with rest("alice", tx) as c:
            failing = [
                "insert into public.acct values (1, 1)",  # 23505
                "update public.acct set n = -1 where id = 1",  # 23514 (check)
                "update public.acct set n = 1 where id = 9",  # 55P03 (bob's claim)
                "insert into public.acct values (30, 1), (9, 1)",  # 23505 after one row
            ]
            assert [sqlstate_of(c, q) for q in failing] == ["23505", "23514", "55P03", "23505"]
            calls = [
                ("acct", "insert", {"id": 1, "n": 1}, None),
                ("acct", "insert", {"id": 31, "nope": 1}, None),
                ("acct", "insert", [{"id": 32, "n": 1}, {"id": 9, "n": 1}], None),
                ("acct", "update", {"n": 1}, {"id": 9}),
                ("acct", "lock", None, {"id": 8}),
                ("acct", "lock", None, {"id": 9}),
                ("acct", "upsert", {"id": 9, "n": 1}, None),
            ]
            states = [
                sqlstate_of(
                    c,
                    "select resilience.tx_execute(%s, %s, %s, %s, %s)",
                    (tx, t, op, None if d is None else Jsonb(d), None if m is None else Jsonb(m)),
                )
                for t, op, d, m in calls
            ]
            assert states == ["23505", "42703", "23505", "55P03", "55P03", "55P03", "55P03"]
            c.execute("update public.acct set n = 3 where id = 3")
        holder.rollback()
    assert journal(conn, tx) == [("update", 1)]
    assert [a[:3] for a in execute_audit(conn, tx)] == [("update", 1, "header")]
    assert claimed_keys(conn, tx) == {3}


def test_clients_cannot_write_execute_rows(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    capture = one(
        conn,
        "select m.capture_function::oid::regproc::text from resilience.managed_tables as m"
        " where m.relation = 'public.acct'::regclass",
    )
    with rest("alice", tx) as c:
        attempts = [
            (
                "insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)"
                " values ('execute', %s, 'authenticated', 'alice', '{}')",
                (tx,),
            ),
            ("select resilience._audit('execute', %s, '{}')", (tx,)),
            (
                "insert into resilience.tx_statements (tx_id, seq, relation, operation, row_count)"
                " values (%s, 1, 'public.acct', 'insert', 1)",
                (tx,),
            ),
            (f"select {capture}()", None),
            ("update resilience.audit_log set event = 'execute' where tx_id = %s", (tx,)),
        ]
        for query, params in attempts:
            assert sqlstate_of(c, query, params) is not None, query
    assert execute_audit(conn, tx) == []
    assert journal(conn, tx) == []


# --- 3. one-object insert: a plain INSERT ... RETURNING ----------------------

WIDE = """
create domain public."pos int" as integer not null default 7 check (value > 0);
create domain public.nn_text as text not null;
create type public.mood as enum ('sad', 'ok');
create type public.pair as (x integer, "y z" text);
create table public."we""ird tåble" (
    "select" integer generated by default as identity primary key,
    d text default 'dflt',
    t bigint generated always as identity,
    k numeric(10, 3) default 1.5,
    n jsonb,
    o json,
    w text [] default '{a,b}',
    m public.mood default 'ok',
    j public.pair,
    "Quo""te" text,
    "ünï cødé" varchar(5),
    "from" timestamptz default '2020-01-01 00:00+00',
    g integer generated always as ((k * 2)::integer) stored,
    dom public."pos int",
    r tstzrange,
    b bit(3),
    by bytea,
    iv interval,
    u uuid,
    ip inet,
    pt point,
    x xml,
    c char(3),
    ia integer [] [],
    f float8,
    "1" boolean,
    "$1" text,
    "t.*" text,
    "pg_catalog" text
);
create table public.strict_dom (id integer primary key, v public.nn_text, z integer default 3);
"""

# (row, the SQLSTATE a plain INSERT of it raises, or None)
WIDE_ROWS: list[tuple[Any, str | None]] = [
    ({}, "22023"),
    ({"d": "x"}, None),
    ({"bogus": 1}, "42703"),
    ({"d": "x", "bogus": 1}, "42703"),
    ({"t": 5}, "428C9"),
    ({"g": 1}, "428C9"),
    ({"select": 1000}, None),
    ({"select": None}, "23502"),
    ({"dom": 0}, "23514"),
    ({"dom": None}, "23502"),
    ({"dom": 5, "k": 2.25}, None),
    ({"k": "1e400"}, "22003"),
    ({"k": "NaN", "f": "-0"}, "0A000"),
    ({"f": -0.0}, None),
    ({"n": None, "o": None}, None),
    ({"n": {"b": 1, "a": [1, 2, None]}, "o": {"b": 1, "a": 2}}, None),
    ({"n": "null", "o": "null"}, None),
    ({"w": ["x", None, 'z,"q"'], "ia": [[1, 2], [3, 4]]}, None),
    ({"ia": [[1], [2, 3]]}, "22P02"),
    ({"m": "sad"}, None),
    ({"m": "angry"}, "22P02"),
    ({"j": {"x": 1, "y z": "two"}}, None),
    ({"j": {"x": "not a number"}}, "22P02"),
    ({'Quo"te': "q", "ünï cødé": "ünïcö"}, None),
    ({"ünï cødé": "toolong"}, "22001"),
    ({"from": "2024-02-29T12:00:00+05:30"}, None),
    (
        {"r": "[2020-01-01,2021-01-01)", "b": "101", "by": "\\xdeadbeef", "iv": "1 day 2 hours"},
        None,
    ),
    ({"b": "1"}, "22026"),
    ({"u": "8c1d7ad4-5c2c-4b6c-9d4c-0f0b7a3c1f22", "ip": "10.0.0.1/8", "pt": "(1,2)"}, None),
    ({"x": "<a>b</a>", "c": "ab"}, None),
    ({"x": "<a>"}, "2200N"),
    ({"1": True, "$1": "$2", "t.*": "star", "pg_catalog": "cat"}, None),
    ({"d": "'); drop table public.strict_dom; --"}, None),
]


def _attempt(c: Conn, query: str, params: Any) -> Any:
    """(result, None) or (None, sqlstate), always undone; identity restarted."""
    try:
        with c.transaction(force_rollback=True):
            c.execute(
                """alter table public."we""ird tåble" alter column "select" restart with 1,
                   alter column t restart with 1"""
            )
            return one(c, query, params), None
    except psycopg.Error as e:
        return None, e.sqlstate


def test_one_object_insert_equals_the_general_path_and_a_plain_insert(conn: Conn) -> None:
    """Every row of WIDE_ROWS three ways: tx_execute with the object (the new
    plain INSERT path), with an array of it (the general path), and a plain
    INSERT ... RETURNING of the same values: same row or same SQLSTATE."""
    conn.execute(WIDE)
    conn.execute('select resilience.manage_table(\'public."we""ird tåble"\')')
    tx = one(conn, "select resilience.tx_begin()")
    table = '"we""ird tåble"'
    types = dict(
        conn.execute(
            "select attname::text, format_type(atttypid, atttypmod) from pg_attribute"
            ' where attrelid = \'public."we""ird tåble"\'::regclass and attnum > 0'
        ).fetchall()
    )
    target = sql.Identifier("public", 'we"ird tåble')
    outcomes: list[str | None] = []
    for row, _ in WIDE_ROWS:
        single = _attempt(
            conn, "select resilience.tx_execute(%s, %s, 'insert', %s)", (tx, table, Jsonb(row))
        )
        batch = _attempt(
            conn, "select resilience.tx_execute(%s, %s, 'insert', %s)", (tx, table, Jsonb([row]))
        )
        ran = _attempt(
            conn,
            "select resilience.tx_run(%s)",
            (Jsonb([{"table": table, "operation": "insert", "data": row}]),),
        )
        if row:
            names = sorted(row)
            plain = sql.SQL(
                "with w as (insert into {} as t ({}) select {} from jsonb_to_record(%s) as d ({})"
                " returning to_jsonb(t.*) as j) select jsonb_agg(w.j) from w"
            ).format(
                target,
                sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Identifier("d", n) for n in names),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(types.get(n, "text")))
                    for n in names
                ),
            )
        else:
            plain = sql.SQL("select null where %s is null and false")
        oracle = _attempt(conn, plain.as_string(conn), (Jsonb(row),)) if row else (None, "22023")
        outcomes.append(single[1])
        if single[1] is None:
            expected = {"success": True, "data": oracle[0], "count": 1}
            assert single[0] == batch[0] == expected, row
            assert ran[0] == {"success": True, "results": [{"data": oracle[0], "count": 1}]}, row
        else:
            assert single[1] == batch[1] == ran[1], row
            if oracle[1] != "42703" or single[1] != "42703":
                assert single[1] == oracle[1], row
    assert outcomes == [state for _, state in WIDE_ROWS]
    assert journal(conn, tx) == []


def test_absent_not_null_domain_column_behaves_as_a_plain_insert(conn: Conn) -> None:
    conn.execute(WIDE)
    conn.execute("select resilience.manage_table('public.strict_dom')")
    tx = one(conn, "select resilience.tx_begin()")
    plain = sqlstate_of(conn, "insert into public.strict_dom (id) values (1)")
    for data in ({"id": 1}, [{"id": 1}]):
        got = sqlstate_of(
            conn, "select resilience.tx_execute(%s, 'strict_dom', 'insert', %s)", (tx, Jsonb(data))
        )
        assert got == plain == "23502"
    result = execute(conn, tx, "strict_dom", "insert", {"id": 2, "v": "v"})
    assert result == {"success": True, "data": [{"id": 2, "v": "v", "z": 3}], "count": 1}


@pytest.fixture
def notes(conn: Conn) -> None:
    """A managed table with RLS (insert anything, read only your own rows), a
    BEFORE trigger that skips rows with body 'skip', and column grants."""
    conn.execute(
        """
        create table public.notes (
            id integer generated always as identity primary key,
            owner text not null default 'nobody',
            body text,
            secret text default 'hidden',
            at timestamptz not null default '2000-01-01 00:00+00'
        );
        alter table public.notes enable row level security;
        create policy notes_insert on public.notes for insert to authenticated with check (true);
        create policy notes_read on public.notes for select to authenticated
            using (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
        create policy notes_delete on public.notes for delete to authenticated using (true);
        create policy notes_update on public.notes for update to authenticated using (true);
        grant insert (owner, body, secret, at), delete on public.notes to authenticated;
        grant select (id, owner, body, at) on public.notes to authenticated;
        grant update (body) on public.notes to authenticated;
        create function public.skip_some() returns trigger language plpgsql as $$
        begin
            if new.body = 'skip' then return null; end if;
            return new;
        end $$;
        create trigger skip_some before insert on public.notes
            for each row execute function public.skip_some();
        select resilience.manage_table('public.notes');
        """
    )


def test_insert_returns_what_the_caller_may_read_and_obeys_rls_like_plain_returning(
    conn: Conn, rest: Callable[..., Any], notes: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice") as c:
        mine = {"owner": "alice", "body": "hi"}
        for data in (mine, [mine]):
            got = execute(c, tx, "notes", "insert", data)
            assert got["count"] == 1
            assert [sorted(r) for r in got["data"]] == [["at", "body", "id", "owner"]]
            assert got["data"][0]["owner"] == "alice"
        # A row the SELECT policy hides: plain INSERT ... RETURNING fails
        # (42501), without RETURNING it passes; tx_execute returns rows, so
        # it must fail as RETURNING does, on both paths.
        theirs = {"owner": "bob", "body": "x"}
        plain = probe(c, "insert into public.notes (owner, body) values ('bob', 'x') returning id")
        assert plain == "42501"
        assert probe(c, "insert into public.notes (owner, body) values ('bob', 'x')") is None
        for data in (theirs, [theirs]):
            assert (
                probe(
                    c,
                    "select resilience.tx_execute(%s, 'notes', 'insert', %s)",
                    (tx, Jsonb(data)),
                )
                == plain
            )
        # An identity ALWAYS column without INSERT privilege: as a plain insert.
        plain = probe(c, "insert into public.notes (owner, id) values ('alice', 5)")
        assert plain == "428C9"
        for data in ({"owner": "alice", "id": 5}, [{"owner": "alice", "id": 5}]):
            state = probe(
                c, "select resilience.tx_execute(%s, 'notes', 'insert', %s)", (tx, Jsonb(data))
            )
            assert state == plain
    assert journal(conn, tx) == [("insert", 1), ("insert", 1)]


def test_a_before_trigger_that_skips_the_row(
    conn: Conn, rest: Callable[..., Any], notes: None
) -> None:
    tx = begin(rest, "alice")
    skip = {"owner": "alice", "body": "skip"}
    with rest("alice") as c:
        assert execute(c, tx, "notes", "insert", skip) == {"success": True, "data": [], "count": 0}
        assert execute(c, tx, "notes", "insert", [skip]) == {
            "success": True,
            "data": [],
            "count": 0,
        }
        ran = one(
            c,
            "select resilience.tx_run(%s)",
            (
                Jsonb(
                    [
                        {"table": "notes", "operation": "insert", "data": skip},
                        {"table": "notes", "operation": "insert", "data": {"owner": "alice"}},
                        {"table": "notes", "operation": "insert", "data": {"body": "skip"}},
                    ]
                ),
            ),
        )
        assert [r["count"] for r in ran["results"]] == [0, 1, 0]
        assert [r["data"] for r in ran["results"]][::2] == [[], []]
    assert one(conn, "select count(*) from public.notes") == 1
    assert journal(conn, tx) == [("insert", 0), ("insert", 0)]


def test_arrays_of_rows_and_upserts_are_unchanged(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    tx = begin(rest, "alice")
    with rest("alice") as c:
        got = execute(c, tx, "acct", "insert", [{"id": 20, "n": 1}, {"id": 21, "n": 2}])
        assert got == {
            "success": True,
            "data": [{"id": 20, "n": 1}, {"id": 21, "n": 2}],
            "count": 2,
        }
        state = probe(
            c,
            "select resilience.tx_execute(%s, 'acct', 'insert', %s)",
            (tx, Jsonb([{"id": 22, "n": 1}, {"id": 23}])),
        )
        assert state == "22023"  # rows naming different columns
        assert execute(c, tx, "acct", "upsert", {"id": 20, "n": 5}) == {
            "success": True,
            "data": [{"id": 20, "n": 5}],
            "count": 1,
        }
        assert (
            execute(c, tx, "acct", "upsert", [{"id": 1, "n": 6}, {"id": 24, "n": 7}])["count"] == 2
        )
        assert execute(c, tx, "other", "upsert", {"id": 1}) == {
            "success": True,
            "data": [],
            "count": 0,
        }
        assert (
            probe(
                c,
                "select resilience.tx_execute(%s, 'acct', 'insert', %s, %s)",
                (tx, Jsonb({"id": 30, "n": 1}), Jsonb({"id": 1})),
            )
            == "22023"
        )
    assert snapshot(conn, "public.acct")[0] == "(1,6)"
    assert claimed_keys(conn, tx) == {1, 20, 21, 24}


def test_rollback_of_one_object_inserts_equals_a_real_rollback(
    conn: Conn, rest: Callable[..., Any]
) -> None:
    """The same writes once in a database transaction that is rolled back
    (the oracle) and once in a logical transaction that is: the table must
    read the same, row by row as text, and nothing may stay claimed."""
    conn.execute(WIDE)
    conn.execute(
        """
        insert into public."we""ird tåble" (d, n, j) values ('old', '{"a": 1}', row(1, 'x'));
        grant all on public."we""ird tåble" to authenticated;
        select resilience.manage_table('public."we""ird tåble"');
        """
    )
    table = '"we""ird tåble"'
    rows = [row for row, state in WIDE_ROWS if state is None and "select" not in row]

    def state() -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                'select t::text from public."we""ird tåble" as t order by t."select"'
            )
        ]

    before = state()
    with rest("alice") as c:
        with c.transaction(force_rollback=True):
            tx = one(c, "select resilience.tx_begin()")
            for row in rows:
                execute(c, tx, table, "insert", row)
            execute(c, tx, table, "update", {"d": "new"}, {"d": "old"})
    assert state() == before
    tx = begin(rest, "alice")
    with rest("alice") as c:
        inserted = [execute(c, tx, table, "insert", row)["data"][0] for row in rows]
        execute(c, tx, table, "update", {"d": "new"}, {"d": "old"})
    assert len(state()) == len(before) + len(inserted)
    with rest("alice") as c:
        result = one(c, "select resilience.tx_rollback(%s)", (tx,))
    assert result["restored_rows"] == len(rows) + 1
    assert state() == before
    assert claimed_keys(conn, tx) == set()


# --- more attacks on capture ------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="the stale capture function's claim guard compares the old key type with the new "
    "(integer = text): every plain write on the table fails with 42883 until the "
    "transaction holding images finishes",
)
def test_plain_writes_after_a_key_type_change_that_could_not_be_regenerated(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    """A key type change while images are held cannot be regenerated (the
    DDL goes through, captured writes get RZ007). Plain writes must stay
    unaffected: claimed rows 55P03, others pass."""
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("update public.acct set n = 50 where id = 1")
    conn.execute("alter table public.acct alter column id type text")
    with rest("alice", tx) as c:
        assert probe(c, "update public.acct set n = 51 where id = '2'") == "RZ007"
    with rest("bob") as c:
        assert probe(c, "update public.acct set n = 0 where id = '3'") is None
        assert probe(c, "update public.acct set n = 0 where id = '1'") == "55P03"


def test_a_cross_partition_move_whose_insert_a_trigger_skips(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    """An UPDATE moving rows to another partition is a delete plus an insert;
    a BEFORE INSERT trigger of the destination returning NULL drops the row.
    The old rows then outnumber the new ones in the transition tables: the
    transaction must still roll back exactly, and claim the keys it touched."""
    conn.execute(
        """
        create function public.drop_skipped() returns trigger language plpgsql as $$
        begin
            if new.v = 'skip' then return null; end if;
            return new;
        end $$;
        create trigger drop_skipped before insert on public.pt_b
            for each row execute function public.drop_skipped();
        """
    )
    before = snapshot(conn, "public.pt")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        refused = sqlstate_of(
            c,
            "update public.pt set id = id + 150,"
            " v = case when id = 1 then 'skip' else v end where id in (1, 2)",
        )
    if refused is not None:  # refusing the statement keeps the promise too
        assert snapshot(conn, "public.pt") == before
        return
    assert snapshot(conn, "public.pt") == ["(101,20,b1)", "(102,10,b2)", "(152,20,a2)"]
    with rest("bob") as c:  # both old keys are the transaction's
        assert probe(c, "insert into public.pt values (1, 0, 'bob')") == "55P03"
        assert probe(c, "insert into public.pt values (2, 0, 'bob')") == "55P03"
    with rest("alice") as c:
        c.execute("select resilience.tx_rollback(%s)", (tx,))
    assert snapshot(conn, "public.pt") == before


# --- more attacks on lock ---------------------------------------------------


@pytest.mark.parametrize("earlier", ["lock", "header update", "select for update", "fk check"])
def test_lock_after_the_same_request_touched_a_row_at_the_same_ctid(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int], earlier: str
) -> None:
    """Earlier in the request, row 1 (pt_a, (0,1)) was locked, updated,
    locked by a plain SELECT ... FOR UPDATE, or key-share locked by a
    foreign-key check. Locking rows 2 (pt_a, (0,2)) and 101 (pt_b, (0,1))
    then claims exactly those (and nothing else new)."""
    conn.execute(
        "create table public.ref (id integer primary key, pt_id integer references public.pt);"
        " grant insert on public.ref to authenticated"
    )
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute("select set_config('request.headers', '{}', true)")  # only tx_execute
        if earlier == "lock":
            execute(c, tx, "pt", "lock", match={"id": 1})
        elif earlier == "header update":
            c.execute(
                "select set_config('request.headers', %s, true)",
                (json.dumps({"x-resilience-tx": str(tx)}),),
            )
            c.execute("update public.pt set v = 'upd' where id = 1")
            c.execute("select set_config('request.headers', '{}', true)")
        elif earlier == "select for update":
            c.execute("select 1 from public.pt where id = 1 for update")
        else:
            c.execute("insert into public.ref values (1, 1)")
        locked = execute(c, tx, "pt", "lock", match={"grp": 20})
        assert sorted(r["id"] for r in locked["data"]) == [2, 101]
    assert claimed_keys(conn, tx) == {2, 101} | (
        {1} if earlier in ("lock", "header update") else set()
    )


def test_lock_of_many_rows_of_one_table(conn: Conn, rest: Callable[..., Any], acct: None) -> None:
    conn.execute(
        "insert into public.other select g, g % 3 from generate_series(2, 5001) as g;"
        " delete from public.other where id % 7 = 0"
    )
    expected = {r[0] for r in conn.execute("select id from public.other where n = 1")}
    tx = begin(rest, "alice")
    with rest("alice") as c:
        assert execute(c, tx, "other", "lock", match={"n": 1})["count"] == len(expected)
    assert claimed_keys(conn, tx) == expected
    with rest("bob") as c:
        assert probe(c, "update public.other set n = 9 where id = %s", (min(expected),)) == "55P03"
        assert probe(c, "update public.other set n = 9 where n = 2") is None


@pytest.mark.min_server_version(15, reason="MERGE")
def test_merge_upsert_and_writable_ctes_in_header_mode_roll_back_exactly(
    conn: Conn, rest: Callable[..., Any], parts: dict[str, int]
) -> None:
    """Statements that fire several capture triggers at once (MERGE, INSERT
    ... ON CONFLICT DO UPDATE, a DELETE and an INSERT of the same key in one
    query), on a partitioned table, as PostgREST-style requests."""
    conn.execute("insert into public.pt select g, g % 3, 'x' from generate_series(3, 30) as g")
    before = snapshot(conn, "public.pt")
    tx = begin(rest, "alice")
    with rest("alice", tx) as c:
        c.execute(
            """
            merge into public.pt as t
            using (values (1, 'merged'), (40, 'new'), (5, 'gone'), (6, 'moved')) as s (id, v)
            on t.id = s.id
            when matched and s.v = 'gone' then delete
            when matched and s.v = 'moved' then update set id = 160, v = s.v
            when matched then update set v = s.v
            when not matched then insert values (s.id, 0, s.v)
            """
        )
        c.execute(
            "insert into public.pt values (7, 7, 'up'), (41, 0, 'ins'), (101, 1, 'up')"
            " on conflict (id) do update set v = excluded.v, grp = excluded.grp"
        )
        c.execute(
            "with d as (delete from public.pt where id in (8, 102) returning *)"
            " insert into public.pt select id, grp + 100, v || '!' from d"
        )
    with rest("bob") as c:
        for key in (1, 40, 160, 7, 41, 101, 8, 102):  # written, still there
            assert probe(c, "delete from public.pt where id = %s", (key,)) == "55P03", key
        for key in (5, 6):  # deleted, or moved away
            assert probe(c, "insert into public.pt values (%s, 0, 'b')", (key,)) == "55P03", key
        assert probe(c, "update public.pt set v = 'bob' where id = 9") is None
    with rest("alice") as c:
        c.execute("select resilience.tx_rollback(%s)", (tx,))
    assert snapshot(conn, "public.pt") == before
    assert claimed_keys(conn, tx) == set()


def test_lock_claims_only_the_rows_rls_lets_the_caller_lock(
    conn: Conn, rest: Callable[..., Any]
) -> None:
    conn.execute(
        """
        create table public.docs (id integer primary key, owner text not null, grp integer)
            partition by range (id);
        create table public.docs_1 partition of public.docs for values from (0) to (3);
        create table public.docs_2 partition of public.docs for values from (3) to (10);
        insert into public.docs values (1, 'alice', 1), (2, 'bob', 1), (3, 'alice', 2),
            (4, 'bob', 2), (5, 'carol', 1);
        alter table public.docs enable row level security;
        create policy docs_read on public.docs for select to authenticated using (true);
        create policy docs_write on public.docs for update to authenticated
            using (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
        grant select, update on public.docs to authenticated;
        select resilience.manage_table('public.docs');
        """
    )
    tx = begin(rest, "alice")
    with rest("alice") as c:
        got = execute(c, tx, "docs", "lock", match={"id": 2})
        assert got == {"success": True, "data": [], "count": 0}
        # grp 1 and grp 2 (two partitions), alice's rows only.
        for grp in (1, 2):
            execute(c, tx, "docs", "lock", match={"grp": grp})
    assert claimed_keys(conn, tx) == {1, 3}
    assert probe(conn, "update public.docs set grp = grp where id = 1") == "55P03"
    assert probe(conn, "update public.docs set grp = grp where id in (2, 4, 5)") is None


def test_tx_run_one_object_inserts_feed_refs(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    ops = [
        {"table": "acct", "operation": "insert", "data": {"id": 50, "n": 5}},
        {"table": "other", "operation": "insert", "data": {"id": {"$ref": "0.id"}, "n": 7}},
        {"table": "public.other", "operation": "insert", "data": {"id": 51, "n": {"$ref": "1.n"}}},
    ]
    with rest("alice") as c:
        got = one(c, "select resilience.tx_run(%s)", (Jsonb(ops),))
    assert got == {
        "success": True,
        "results": [
            {"data": [{"id": 50, "n": 5}], "count": 1},
            {"data": [{"id": 50, "n": 7}], "count": 1},
            {"data": [{"id": 51, "n": 7}], "count": 1},
        ],
    }
    bad = [*ops[:2], {"table": "other", "operation": "insert", "data": {"id": 52, "zz": 1}}]
    conn.execute("delete from public.acct where id = 50; delete from public.other where id >= 50")
    with rest("alice") as c:
        assert probe(c, "select resilience.tx_run(%s)", (Jsonb(bad),)) == "42703"
    assert one(conn, "select count(*) from public.other where id >= 50") == 0


# --- 4b992bb: the usual match filter and the transaction check in one query ---


def test_match_filters_still_name_their_errors(
    conn: Conn, rest: Callable[..., Any], acct: None
) -> None:
    conn.execute(
        'create table public.m (id integer primary key, "j""o" json, t text, "select" integer);'
        " insert into public.m values (1, null, 'a', 1), (2, '{}', null, 2);"
        " grant all on public.m to authenticated;"
        " select resilience.manage_table('public.m')"
    )
    tx = begin(rest, "alice")
    cases: list[tuple[Any, str | None, int]] = [
        ({'j"o': None}, None, 1),
        ({"t": None, "select": 2}, None, 1),
        ({"select": 1, "t": "a"}, None, 1),
        ({'j"o': {}}, "22023", 0),
        ({"zz": 1}, "42703", 0),
        ({"zz": None}, "42703", 0),
        ({"id": 1, "zz": None}, "42703", 0),
        ({}, "22023", 0),
        ({"id": "x"}, "22P02", 0),
    ]
    query = "select resilience.tx_execute(%s, 'm', %s, %s, %s)"
    for match, state, count in cases:
        for op in ("lock", "update", "delete"):
            data = {"t": "new"} if op == "update" else None
            params = (tx, op, None if data is None else Jsonb(data), Jsonb(match))
            # One request each, undone (a lock cannot run in a savepoint).
            with rest("alice") as c:
                try:
                    got, error = one(c, query, params), None
                except psycopg.Error as e:
                    got, error = None, e.sqlstate
                c.rollback()
            assert error == state, (match, op)
            assert (got or {}).get("count", 0) == count, (match, op)


def test_a_foreign_transaction_is_not_locked_by_a_failed_request(
    server: Server, database: str, rest: Callable[..., Any], acct: None
) -> None:
    """alice names bob's transaction; her write fails (RZ001) and her
    request's database transaction stays open, aborted. bob must still be
    able to commit his transaction meanwhile (it was never locked)."""
    bob = begin(rest, "bob")
    with rest("alice", bob) as c:
        with pytest.raises(psycopg.Error) as failed:
            c.execute("update public.acct set n = 0 where id = 1")
        assert failed.value.sqlstate == "RZ001"
        with rest("bob") as b:
            b.execute("set local lock_timeout = '5s'")
            assert one(b, "select resilience.tx_commit(%s)", (bob,))["status"] == "committed"
        c.rollback()


# --- DDL that changes a managed table without naming it ----------------------


@pytest.fixture
def app_schema(conn: Conn) -> None:
    conn.execute(
        """
        create schema app;
        create type app.mood as enum ('sad', 'ok');
        create table app.acct (id integer primary key, n integer, m app.mood default 'ok');
        insert into app.acct select g, g from generate_series(1, 5) as g;
        grant usage on schema app to authenticated;
        grant all on app.acct to authenticated;
        select resilience.manage_table('app.acct');
        """
    )


def test_schema_rename_during_a_transaction(
    conn: Conn, rest: Callable[..., Any], app_schema: None
) -> None:
    before = snapshot(conn, "app.acct")
    tx = begin(rest, "alice")
    with rest("alice") as c:
        execute(c, tx, "app.acct", "update", {"n": 10}, {"id": 1})
    conn.execute("alter schema app rename to app2")
    with rest("alice") as c:
        c.execute("select set_config('search_path', 'app2', true)")
        got = execute(c, tx, "app2.acct", "update", {"n": 20}, {"id": 2})
        assert got["count"] == 1
        result = one(c, "select resilience.tx_rollback(%s)", (tx,))
    assert result["status"] == "rolled_back"
    assert snapshot(conn, "app2.acct") == before


def test_renaming_a_column_type_keeps_tx_execute_working(
    conn: Conn, rest: Callable[..., Any], app_schema: None
) -> None:
    conn.execute("alter type app.mood rename to feeling")
    plain = probe(conn, "insert into app.acct values (6, 6, 'sad')")
    assert plain is None
    tx = begin(rest, "alice")
    with rest("alice") as c:
        got = execute(c, tx, "app.acct", "insert", {"id": 6, "n": 6, "m": "sad"})
        assert got["data"] == [{"id": 6, "n": 6, "m": "sad"}]
        got = execute(c, tx, "app.acct", "update", {"m": "ok"}, {"m": "sad"})
        assert got["count"] == 1
