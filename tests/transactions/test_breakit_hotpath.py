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
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from conftest import Server

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
        grant select, insert, update, delete on public.pt to authenticated;
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


@pytest.mark.xfail(
    strict=True,
    reason="_lock_<n> accepts any row whose xmax is this transaction: a FOR KEY SHARE lock "
    "taken by a foreign-key check counts, so a caller without UPDATE rights claims the row",
)
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
    assert state is not None
    assert claimed_keys(conn, tx) == set()
