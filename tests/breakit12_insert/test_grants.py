"""Who may call the generated insert: the same callers as tx_execute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .conftest import make_twins, table_text


def _insert(dsn: str, table: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        tx = c.execute("select resilience.tx_begin()").fetchone()[0]  # type: ignore[index]
        try:
            return c.execute(
                "select resilience.tx_execute(%s, %s, 'insert', %s)", (tx, table, Jsonb({"a": "x"}))
            ).fetchone()[0]  # type: ignore[index]
        except psycopg.Error as error:
            return ("error", error.sqlstate)


def test_role_granted_tx_execute_after_manage_table(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """A DBA grants tx_execute (and the schema) to an app role directly,
    after manage_table: both paths answer the same (42501: the API is
    granted through resilience_user), and membership granted after
    manage_table works on both."""
    make_twins(conn, "create table {t} (id int generated always as identity primary key, a text)")
    role_dsn = make_role("insrow_direct")
    conn.execute("""
        grant usage on schema resilience to insrow_direct;
        grant execute on function resilience.tx_begin(integer, text),
            resilience.tx_execute(uuid, text, text, jsonb, jsonb) to insrow_direct;
        grant all on fast, slow to insrow_direct;
    """)
    assert conn.execute(
        "select has_function_privilege('insrow_direct',"
        " 'resilience.tx_begin(integer, text)', 'execute')"
    ).fetchone()[0]  # type: ignore[index]
    fast = _insert(role_dsn, "fast")
    slow = _insert(role_dsn, "slow")
    assert fast == slow == ("error", "42501")
    conn.execute("grant resilience_user to insrow_direct")
    fast = _insert(role_dsn, "fast")
    slow = _insert(role_dsn, "slow")
    assert str(fast).replace("fast", "T") == str(slow).replace("slow", "T")
    assert len(table_text(conn, "fast")) == 1
