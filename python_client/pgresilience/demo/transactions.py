"""Demo: a logical transaction across separate calls, rolled back as a whole.

Create a user, then its profile; the profile insert fails, and the rollback
removes the user too, although the user's insert was committed by its own
call long before. Then the same signup as one atomic batch (tx_run), where
the profile refers to the user id the first operation returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from pgresilience.transactions import TransactionManager
from pgresilience.transactions.batch import operation, ref

__all__ = ["run"]

SCHEMA = """
create table if not exists demo_users (
    id bigint generated always as identity primary key,
    name text not null
);
create table if not exists demo_profiles (
    id bigint generated always as identity primary key,
    user_id bigint not null references demo_users (id) on delete cascade,
    bio text not null check (length(bio) <= 20)
);
select resilience.manage_table('demo_users');
select resilience.manage_table('demo_profiles');
"""


def run(dsn: str, say: Callable[[str], None]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        say("managed tables demo_users and demo_profiles (writes to them are captured)")
        users_before = conn.execute("select count(*) from demo_users").fetchone()
        with TransactionManager(conn) as tm:
            tx_id = tm.begin(timeout=30.0, label="signup")
            say(f"begin: logical transaction {tx_id}")
            user = tm.execute(tx_id, "demo_users", "insert", {"name": "John"})
            say(f"call 1 (committed on its own): created user {user.data[0]}")
            profile = tm.execute(
                tx_id,
                "demo_profiles",
                "insert",
                {"user_id": user.data[0]["id"], "bio": "a bio far too long for the check"},
            )
            code = profile.error.sqlstate if profile.error else None
            say(f"call 2: profile insert failed: {profile.error} (SQLSTATE {code})")
            seen = conn.execute("select count(*) from demo_users").fetchone()
            say(f"the user is still in the table for now: {seen[0] if seen else 0} user(s)")
            result = tm.rollback(tx_id, reason="profile failed")
            say(f"rollback: {result['restored_rows']} row(s) restored, status {result['status']}")
        after = conn.execute("select count(*) from demo_users").fetchone()
        n_before = users_before[0] if users_before else 0
        n_after = after[0] if after else 0
        say(f"users before: {n_before}, after rollback: {n_after}: the user is gone too")
        say("the same signup as one atomic batch (tx_run), profile -> {$ref: '0.id'}:")
        with TransactionManager(conn) as tm:
            batch = tm.run(
                [
                    operation("demo_users", "insert", {"name": "Jane"}),
                    operation("demo_profiles", "insert", {"user_id": ref(0, "id"), "bio": "hi"}),
                ]
            )
            say(f"  one call, one database transaction: success={batch.success}")
            for index, outcome in enumerate(batch.results):
                say(f"  operation {index}: {outcome.data}")
        claims(conn, say)
        read_under_lock(conn, say)


def read_under_lock(
    conn: psycopg.Connection[tuple[object, ...]], say: Callable[[str], None]
) -> None:
    """Read, decide, write across calls without a lost update: `lock`."""
    with TransactionManager(conn) as tm, tm.transaction(timeout=30.0) as tx:
        [row] = tx.lock("demo_users", {"name": "Jane (request)"})
        say(f"lock: read {row['name']!r} under lock (the logical SELECT ... FOR UPDATE)")
        try:
            conn.execute("update demo_users set name = 'someone else' where id = %s", (row["id"],))
        except psycopg.errors.LockNotAvailable:
            say("  another writer of that row fails at once (55P03) until commit")
        tx.update("demo_users", {"name": "Jane (locked, then renamed)"}, match={"id": row["id"]})
    renamed = conn.execute("select name from demo_users where id = %s", (row["id"],)).fetchone()
    say(f"  committed: {renamed[0] if renamed else None!r}")


def claims(conn: psycopg.Connection[tuple[object, ...]], say: Callable[[str], None]) -> None:
    with TransactionManager(conn) as tm:
        holder = tm.begin(timeout=0.2, label="abandoned")
        tm.execute(holder, "demo_users", "update", {"name": "Jane (abandoned)"}, {"name": "Jane"})
        say(f"claims: {holder} renamed Jane, then was abandoned (timeout 0.2 s)")
        time.sleep(0.3)
        try:
            conn.execute("update demo_users set name = 'Jane (plain)' where name like 'Jane%'")
        except psycopg.errors.LockNotAvailable as exc:
            say(f"  a plain write on that row fails at once: {exc.diag.message_primary} (55P03)")
        # As PostgREST runs a PATCH request with db-pre-request set to the hook.
        with conn.transaction():
            conn.execute("select set_config('request.method', 'PATCH', true)")
            conn.execute("select resilience.tx_pre_request()")
            conn.execute(
                "update demo_users set name = name || ' (request)' where name like 'Jane%'"
            )
        row = conn.execute("select name from demo_users where name like 'Jane%'").fetchone()
        say(f"  as a PostgREST request with tx_pre_request: holder {tm.status(holder)['status']},")
        say(f"  and the write went through on the restored row: {row[0] if row else None!r}")
