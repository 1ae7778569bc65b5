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
