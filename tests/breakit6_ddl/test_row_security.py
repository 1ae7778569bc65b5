"""Promise (docs/transactions.md, "Rollback"): a restore never skips a row
silently: every row is restored, or the rollback fails and restores
nothing. The undo runs with the table owner's rights, so RLS forced on the
owner (ALTER TABLE ... FORCE ROW LEVEL SECURITY, here run while the
transaction is open) would hide rows from it: refused, 42501."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .conftest import call, rows_text, sqlstate_of

TABLE = """
create table t (id integer primary key, v text);
insert into t values (1, 'a');
alter table t owner to breakit6_rls_owner;
select resilience.manage_table('t');
"""


def forced_after_a_write(
    conn: psycopg.Connection[Any], make_role: Callable[..., str], operation: str, *args: Any
) -> Any:
    make_role("breakit6_rls_owner", login=False)
    conn.execute(TABLE)
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "t", operation, *args)
    conn.execute("alter table t enable row level security, force row level security")
    return tx


@pytest.mark.parametrize("force", [False, True])
def test_forced_row_security_never_makes_the_rollback_skip_an_inserted_row(
    conn: psycopg.Connection[Any], make_role: Callable[..., str], force: bool
) -> None:
    """The hidden inserted row would look already undone: the rollback is
    refused (42501), restores nothing and leaves the transaction active."""
    tx = forced_after_a_write(conn, make_role, "insert", {"id": 2, "v": "new"})
    rows = rows_text(conn, "t")

    assert sqlstate_of(call, conn, "tx_rollback", tx, None, force) == "42501"
    assert rows_text(conn, "t") == rows == ["(1,a)", "(2,new)"]
    assert call(conn, "tx_status", tx)["status"] == "active"

    conn.execute("alter table t no force row level security")
    call(conn, "tx_rollback", tx)
    assert rows_text(conn, "t") == ["(1,a)"]


@pytest.mark.parametrize("force", [False, True])
def test_forced_row_security_refuses_the_rollback_of_an_update(
    conn: psycopg.Connection[Any], make_role: Callable[..., str], force: bool
) -> None:
    """A hidden updated row is no conflict (force could not overwrite it):
    the rollback is refused (42501) and restores nothing."""
    tx = forced_after_a_write(conn, make_role, "update", {"v": "x"}, {"id": 1})

    assert sqlstate_of(call, conn, "tx_rollback", tx, None, force) == "42501"
    assert rows_text(conn, "t") == ["(1,x)"]
