"""Promise (docs/transactions.md, "What manage_table generates", "DDL on
managed tables"; DESIGN.md section 1): column and table names may be
anything PostgreSQL allows, none collides with our generated SQL, and DDL
between the calls of an open logical transaction (renames of column, table
and schema, defaults, constraints, triggers, RLS, owner) regenerates the
capture at once: the transaction goes on, and its rollback gives back
exactly the rows a real ROLLBACK would (the rows before its first write)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from .conftest import call, rows_text, sqlstate_of

# Columns named like the aliases and variables of our generated SQL.
TABLE = """
create schema "select";
create table "select"."we""ird täble" (
    tx_id integer primary key, seq integer, op text, claim boolean, b text, t text,
    i integer, e integer, k1 integer, "v_tx" text, "a b" jsonb
);
insert into "select"."we""ird täble"
    select g, g, 'op' || g, g % 2 = 0, 'b' || g, 't' || g, g, -g, g * 100, 'v', '{"x": [1, null]}'
    from generate_series(1, 4) as g;
select resilience.manage_table('"select"."we""ird täble"');
"""


def test_renames_and_other_ddl_between_calls_keep_the_transaction_exact(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("breakit6 owner", login=False)
    conn.execute(TABLE)
    before = rows_text(conn, "select", 'we"ird täble')
    schema, table = "select", 'we"ird täble'

    def name() -> str:  # tx_execute's table_name: quoted as in SQL
        return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))

    tx = call(conn, "tx_begin")
    call(conn, "tx_execute", tx, name(), "update", {"b": "x", "claim": None}, {"tx_id": 1})

    conn.execute('alter table "select"."we""ird täble" rename column b to "i"""')
    call(conn, "tx_execute", tx, name(), "insert", {"tx_id": 5, 'i"': "new", "seq": 5})

    conn.execute('alter table "select"."we""ird täble" rename to "Täble ""of"" tx_id"')
    table = 'Täble "of" tx_id'
    call(conn, "tx_execute", tx, name(), "delete", None, {"tx_id": 2})

    conn.execute('alter schema "select" rename to "from"')
    schema = "from"
    call(conn, "tx_execute", tx, name(), "update", {"tx_id": 30}, {"tx_id": 3})

    target = sql.Identifier(schema, table)
    conn.execute(
        sql.SQL(
            "alter table {t} alter column op set default 'dflt';"
            " alter table {t} add constraint e_neg check (e <= 0);"
            " alter table {t} enable row level security;"
            ' create function "from".touch() returns trigger language plpgsql'
            " as $$ begin return new; end $$;"
            " create trigger touch before update on {t}"
            ' for each row execute function "from".touch();'
            # (the undo runs as the table owner: it needs the schema too)
            ' grant usage on schema "from" to "breakit6 owner";'
            ' alter table {t} owner to "breakit6 owner"'
        ).format(t=target)
    )
    call(conn, "tx_execute", tx, name(), "upsert", {"tx_id": 4, "seq": 44}, None)
    assert sqlstate_of(conn.execute, sql.SQL("update {} set seq = 0").format(target)) == "55P03"

    assert call(conn, "tx_rollback", tx)["status"] == "rolled_back"
    assert rows_text(conn, schema, table) == before
