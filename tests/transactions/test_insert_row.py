"""An insert of one row object naming every column a client may insert, or
all of them but those with a default, takes the table's generated insert
function (its plan kept for the session); every other insert takes the
general path. The general path is the oracle: the same calls on a twin
table whose registry entry lacks the fast path must give the same rows,
counts, images, audit rows and SQLSTATEs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from .conftest import begin

# Columns named like the generated function's own parameter, out
# parameters and aliases, plus quotes, unicode, a reserved word, a domain
# with a check, a generated column and an always-identity column (neither
# may be named), and columns whose defaults the fast path must leave to
# the statement.
TABLE = '''
create table {t} (
    "id" bigint generated always as identity,
    "p_data" int primary key,
    "inserted_rows" text default 'dflt',
    "inserted_count" numeric(6, 2),
    "t" text not null,
    "d" small_positive,
    "select" text collate "C" default 'sel',
    "Ünï ""q""" jsonb,
    "twice" int generated always as ("p_data" * 2) stored
)
'''
ALL = {
    "p_data": 1,
    "inserted_rows": "r",
    "inserted_count": 1.255,
    "t": "x",
    "d": 3,
    "select": "s",
    'Ünï "q"': {"k": [1, None]},
}
REQUIRED = {k: v for k, v in ALL.items() if k not in ("inserted_rows", "select")}

FAST, GENERAL = "fast", "general"


@pytest.fixture
def twins(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Tables `fast` and `general`, identical and managed; `general` has
    its insert function removed from the registry (the general path). Both
    skip a row whose p_data is 13 (a BEFORE trigger returning null)."""
    conn.execute("create domain small_positive as int check (value > 0 and value < 100)")
    conn.execute("""
        create function skip_13() returns trigger language plpgsql as
        $$ begin if new.p_data = 13 then return null; end if; return new; end $$
    """)
    for name in (FAST, GENERAL):
        table = sql.Identifier(name)
        conn.execute(sql.SQL(TABLE).format(t=table))
        conn.execute(
            sql.SQL(
                "create trigger skip_13 before insert on {} for each row execute function skip_13()"
            ).format(table)
        )
        conn.execute("select resilience.manage_table(%s)", (name,))
    conn.execute(
        "update resilience.managed_tables set descriptor = descriptor - 'insert_row'"
        " where relation = 'general'::regclass"
    )
    assert conn.execute(
        "select relation::text, descriptor ? 'insert_row' from resilience.managed_tables order by 1"
    ).fetchall() == [("fast", True), ("general", False)]
    # Count calls of PL functions in every session (see insert()).
    conn.execute(
        "do $$ begin execute format('alter database %I set track_functions = ''pl''',"
        " current_database()); end $$"
    )
    conn.execute("set track_functions = 'pl'")
    return conn


def insert(conn: psycopg.Connection[Any], tx: str, table: str, data: Any) -> tuple[Any, bool]:
    """tx_execute insert: its result, or the SQLSTATE it raised; and
    whether the table's generated insert function did it: an error raised
    in it, or a result without the general path (which always builds its
    statement with _execute_sql; its calls counted in this database
    transaction)."""
    calls = (
        "select coalesce(sum(calls), 0) from pg_stat_xact_user_functions"
        " where schemaname = 'resilience' and funcname = '_execute_sql'"
    )
    try:
        with conn.transaction():
            before = conn.execute(calls).fetchone()
            row = conn.execute(
                "select resilience.tx_execute(%s, %s, 'insert', %s)",
                (tx, table, None if data is None else Jsonb(data)),
            ).fetchone()
            after = conn.execute(calls).fetchone()
    except psycopg.Error as error:
        return ("error", error.sqlstate), "_insert_row_" in (error.diag.context or "")
    assert row is not None and before is not None and after is not None
    return row[0], after[0] == before[0]


def images(conn: psycopg.Connection[Any], table: str) -> list[Any]:
    """The table's image rows (op, claim, after image) without tx or seq."""
    image = conn.execute(
        "select image_table::text from resilience.managed_tables where relation = %s::regclass",
        (table,),
    ).fetchone()
    assert image is not None
    statement = sql.SQL("select op, claim, a::text from {} order by seq").format(sql.SQL(image[0]))
    return conn.execute(statement).fetchall()


def audit(conn: psycopg.Connection[Any], tx: str) -> list[Any]:
    return conn.execute(
        "select event, detail - 'duration_ms' - 'table' from resilience.audit_log"
        " where tx_id = %s order by id",
        (tx,),
    ).fetchall()


def rows(conn: psycopg.Connection[Any], table: str) -> list[Any]:
    return conn.execute(
        sql.SQL("select t::text from {} as t order by p_data").format(sql.Identifier(table))
    ).fetchall()


DATA = [
    pytest.param(ALL, True, id="every insertable column"),
    pytest.param(dict(reversed(list(ALL.items()))), True, id="every column, other order"),
    pytest.param(REQUIRED, True, id="all but the defaulted"),
    pytest.param({**REQUIRED, "select": None}, False, id="one default named as null"),
    pytest.param({**REQUIRED, "p_data": 13}, True, id="a BEFORE trigger skips it"),
    pytest.param({**ALL, "p_data": "2"}, True, id="number as string"),
    pytest.param({**ALL, "p_data": "x"}, True, id="not a number"),
    pytest.param({**ALL, "p_data": 1.5}, True, id="fraction"),
    pytest.param({**ALL, "t": None}, True, id="null into not null"),
    pytest.param({**ALL, "d": 500}, True, id="domain check fails"),
    pytest.param({**ALL, "inserted_count": 12345.6}, True, id="numeric overflow"),
    pytest.param({**ALL, "p_data": None}, True, id="null key"),
    pytest.param({**ALL, "id": 7}, False, id="always-identity named"),
    pytest.param({**ALL, "twice": 7}, False, id="generated column named"),
    pytest.param({**ALL, "nope": 1}, False, id="unknown column"),
    pytest.param(
        {k: v for k, v in REQUIRED.items() if k != "t"}, False, id="a required column left out"
    ),
    pytest.param({}, False, id="empty"),
    pytest.param([ALL], False, id="array of one row"),
    pytest.param("a", False, id="scalar"),
    pytest.param(None, False, id="no data"),
]


@pytest.mark.parametrize(("data", "fast"), DATA)
def test_insert_row_gives_what_the_general_path_gives(
    twins: psycopg.Connection[Any], data: Any, fast: bool
) -> None:
    results = {}
    for table in (FAST, GENERAL):
        tx = begin(twins)
        first, took_fast = insert(twins, tx, table, data)
        again, _ = insert(twins, tx, table, data)  # the key is taken now (23505)
        results[table] = (first, again, images(twins, table), audit(twins, tx), rows(twins, table))
        assert took_fast == (fast and table == FAST)
        twins.execute("select resilience.tx_rollback(%s)", (tx,))
        assert rows(twins, table) == []
    assert results[FAST] == results[GENERAL]


def test_the_rows_defaults_and_the_rollback(twins: psycopg.Connection[Any]) -> None:
    tx = begin(twins)
    result, fast = insert(twins, tx, FAST, REQUIRED)
    assert fast and result["count"] == 1
    (row,) = result["data"]
    assert (row["inserted_rows"], row["select"], row["twice"], row["id"]) == ("dflt", "sel", 2, 1)
    assert row["inserted_count"] == 1.26
    twins.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(twins, FAST) == []


def test_another_users_transaction_is_not_found_before_anything_is_inserted(
    twins: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("ir_user", member_of=("resilience_user",))
    twins.execute("grant select, insert on fast to ir_user")
    tx = begin(twins)  # the superuser's
    with psycopg.connect(make_role("ir_user"), autocommit=True) as user:
        assert insert(user, tx, FAST, ALL)[0] == ("error", "RZ001")
    assert rows(twins, FAST) == []


def test_row_level_security_applies_on_both_paths(
    twins: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("ir_rls", member_of=("resilience_user",))
    for table in (FAST, GENERAL):
        name = sql.Identifier(table)
        twins.execute(sql.SQL("grant select, insert on {} to ir_rls").format(name))
        twins.execute(sql.SQL("alter table {} enable row level security").format(name))
        twins.execute(
            sql.SQL("create policy reads on {} for select to ir_rls using (true)").format(name)
        )
        twins.execute(
            sql.SQL(
                "create policy small on {} for insert to ir_rls with check (p_data < 10)"
            ).format(name)
        )
    with psycopg.connect(make_role("ir_rls"), autocommit=True) as user:
        tx = begin(user)
        for table in (FAST, GENERAL):
            assert insert(user, tx, table, {**ALL, "p_data": 50}) == (
                ("error", "42501"),
                table == FAST,
            )
            result, fast = insert(user, tx, table, ALL)
            assert (result["count"], fast) == (1, table == FAST)
        user.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(twins, FAST) == rows(twins, GENERAL) == []


def test_a_caller_with_column_grants_only_gets_the_granted_columns(
    twins: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """No table SELECT grant: the general path, which returns only the
    columns the caller may read, never the fast path's whole row."""
    make_role("ir_cols", member_of=("resilience_user",))
    twins.execute('grant select ("p_data", "t"), insert on fast to ir_cols')
    with psycopg.connect(make_role("ir_cols"), autocommit=True) as user:
        tx = begin(user)
        result, fast = insert(user, tx, FAST, ALL)
        assert (result["data"], fast) == ([{"p_data": 1, "t": "x"}], False)
        user.execute("select resilience.tx_rollback(%s)", (tx,))


def test_a_column_added_or_given_a_default_is_followed(twins: psycopg.Connection[Any]) -> None:
    twins.execute("alter table fast add column extra text default 'e'")
    twins.execute("alter table fast alter column t set default 'tt'")
    tx = begin(twins)
    without_t = {k: v for k, v in REQUIRED.items() if k != "t"}
    result, fast = insert(twins, tx, FAST, without_t)
    assert (result["data"][0]["t"], fast) == ("tt", True)
    result, fast = insert(twins, tx, FAST, {**ALL, "p_data": 2, "extra": "x"})
    assert (result["data"][0]["extra"], fast) == ("x", True)
    twins.execute("select resilience.tx_rollback(%s)", (tx,))
    twins.execute("alter table fast drop column extra")
    tx = begin(twins)
    result, fast = insert(twins, tx, FAST, {**ALL, "p_data": 3})
    assert fast and "extra" not in result["data"][0]
    twins.execute("select resilience.tx_rollback(%s)", (tx,))
    assert rows(twins, FAST) == []


def test_partitioned_table_inserts_into_the_right_partition(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("""
        create table events (region text, id int, note text, primary key (region, id))
            partition by list (region);
        create table events_eu partition of events for values in ('eu');
        create table events_us partition of events for values in ('us');
        select resilience.manage_table('events');
    """)
    tx = begin(conn)
    result, fast = insert(conn, tx, "events", {"region": "us", "id": 1, "note": "u"})
    assert fast and result["count"] == 1
    assert conn.execute("select tableoid::regclass::text, note from events").fetchall() == [
        ("events_us", "u")
    ]
    conn.execute("select resilience.tx_rollback(%s)", (tx,))
    assert conn.execute("select count(*) from events").fetchone() == (0,)


def test_unmanage_drops_the_function_and_manage_brings_it_back(
    twins: psycopg.Connection[Any],
) -> None:
    function = twins.execute(
        "select descriptor ->> 'insert_row' from resilience.managed_tables"
        " where relation = 'fast'::regclass"
    ).fetchone()
    assert function is not None
    exists = "select to_regproc(%s) is not null"
    assert twins.execute(exists, function).fetchone() == (True,)
    twins.execute("select resilience.unmanage_table('fast')")
    assert twins.execute(exists, function).fetchone() == (False,)
    twins.execute("select resilience.manage_table('fast')")
    tx = begin(twins)
    result, fast = insert(twins, tx, FAST, ALL)
    assert (result["count"], fast) == (1, True)
    twins.execute("select resilience.tx_rollback(%s)", (tx,))
