"""Promise (docs/transactions.md, "Rollback"): a restore never skips a row
silently: every row is restored, or the rollback fails with RZ005 and
restores nothing. The undo runs with the table owner's rights, so RLS
forced on the owner (ALTER TABLE ... FORCE ROW LEVEL SECURITY, here run
while the transaction is open) hides rows from it."""

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


@pytest.mark.xfail(
    strict=True,
    reason="RLS forced on the table owner hides the inserted row from the undo (run as the "
    "owner): the rollback reports success, restored_rows 0, and the row stays",
)
def test_forced_row_security_never_makes_the_rollback_skip_an_inserted_row(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("breakit6_rls_owner", login=False)
    conn.execute(TABLE)
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "t", "insert", {"id": 2, "v": "new"})
    conn.execute("alter table t enable row level security, force row level security")

    state = sqlstate_of(call, conn, "tx_rollback", tx)
    assert state == "RZ005" or rows_text(conn, "t") == ["(1,a)"]


def test_forced_row_security_makes_the_rollback_of_an_update_a_conflict(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("breakit6_rls_owner", login=False)
    conn.execute(TABLE)
    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, "t", "update", {"v": "x"}, {"id": 1})
    conn.execute("alter table t enable row level security, force row level security")

    assert sqlstate_of(call, conn, "tx_rollback", tx) == "RZ005"
    assert rows_text(conn, "t") == ["(1,x)"]
