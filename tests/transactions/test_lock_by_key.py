"""lock by primary key takes a generated per-table function (its plan kept
for the session); every other lock takes the general path. The general path
is the oracle: the same calls on a twin table whose registry entry lacks the
fast path must give the same rows, counts, claims and SQLSTATEs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from .conftest import begin

# Key columns named like the generated function's own parameters, variables
# and aliases, plus quotes, unicode and a reserved word.
TABLE = '''
create table {t} (
    "p_match" bigint,
    "select" text collate "C",
    "locked_rows" int default 0,
    "Ünï ""q""" text,
    v_ctid text,
    primary key ("p_match", "select")
)
'''
ROWS = [
    {"p_match": 1, "select": "a", "locked_rows": 10, 'Ünï "q"': "x", "v_ctid": "c1"},
    {"p_match": 2, "select": "b", "locked_rows": 20, 'Ünï "q"': None, "v_ctid": "c2"},
    {"p_match": 3, "select": "a", "locked_rows": 30, 'Ünï "q"': "z", "v_ctid": None},
]

FAST, GENERAL = "fast", "general"


@pytest.fixture
def twins(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Tables `fast` and `general`, identical and managed; `general` has
    its lock-by-key function removed from the registry (the general path)."""
    for name in (FAST, GENERAL):
        conn.execute(sql.SQL(TABLE).format(t=sql.Identifier(name)))
        for row in ROWS:
            conn.execute(
                sql.SQL("insert into {} select * from jsonb_populate_record(null::{}, %s)").format(
                    sql.Identifier(name), sql.Identifier(name)
                ),
                (Jsonb(row),),
            )
        conn.execute("select resilience.manage_table(%s)", (name,))
    conn.execute(
        "update resilience.managed_tables set descriptor = descriptor - 'lock_by_key'"
        " where relation = 'general'::regclass"
    )
    assert conn.execute(
        "select relation::text, descriptor ? 'lock_by_key' from resilience.managed_tables"
        " order by 1"
    ).fetchall() == [("fast", True), ("general", False)]
    return conn


def lock(conn: psycopg.Connection[Any], tx: str, table: str, match: Any) -> Any:
    """tx_execute lock: its result, or the SQLSTATE it raised."""
    try:
        with conn.transaction():
            row = conn.execute(
                "select resilience.tx_execute(%s, %s, 'lock', null, %s)",
                (tx, table, None if match is None else Jsonb(match)),
            ).fetchone()
    except psycopg.Error as error:
        return ("error", error.sqlstate)
    assert row is not None
    return row[0]


def claims(conn: psycopg.Connection[Any], table: str) -> list[Any]:
    """The table's image rows (op, claim, key, before image) without tx or seq."""
    image = conn.execute(
        "select image_table::text from resilience.managed_tables where relation = %s::regclass",
        (table,),
    ).fetchone()
    assert image is not None
    statement = sql.SQL("select op, claim, k1, k2, b::text from {} order by k1, k2, seq").format(
        sql.SQL(image[0])
    )
    return conn.execute(statement).fetchall()


def audit(conn: psycopg.Connection[Any], tx: str) -> list[Any]:
    return conn.execute(
        "select event, detail - 'duration_ms' - 'table' from resilience.audit_log"
        " where tx_id = %s order by id",
        (tx,),
    ).fetchall()


MATCHES = [
    pytest.param({"p_match": 1, "select": "a"}, id="the key"),
    pytest.param({"select": "a", "p_match": 1}, id="the key, other order"),
    pytest.param({"p_match": 9, "select": "a"}, id="no such row"),
    pytest.param({"p_match": None, "select": "a"}, id="null key value"),
    pytest.param({"p_match": "2", "select": "b"}, id="number as string"),
    pytest.param({"p_match": "x", "select": "a"}, id="not a number"),
    pytest.param({"p_match": 1.5, "select": "a"}, id="fraction"),
    pytest.param({"p_match": 1}, id="part of the key"),
    pytest.param({"p_match": 1, "select": "a", "v_ctid": "c1"}, id="key and more"),
    pytest.param({"p_match": 1, "select": "a", "nope": 1}, id="unknown column"),
    pytest.param({"select": "a"}, id="other column"),
    pytest.param({}, id="empty"),
    pytest.param([1, "a"], id="array"),
    pytest.param("a", id="scalar"),
    pytest.param(None, id="no match"),
]


@pytest.mark.parametrize("match", MATCHES)
def test_lock_by_key_gives_what_the_general_path_gives(
    twins: psycopg.Connection[Any], match: Any
) -> None:
    results = {}
    for table in (FAST, GENERAL):
        tx = begin(twins)
        first = lock(twins, tx, table, match)
        again = lock(twins, tx, table, match)  # a row this transaction claims already
        results[table] = (first, again, claims(twins, table), audit(twins, tx))
        twins.execute("select resilience.tx_rollback(%s)", (tx,))
    assert results[FAST] == results[GENERAL]


def test_a_row_another_transaction_claims_is_refused_on_both_paths(
    twins: psycopg.Connection[Any],
) -> None:
    for table in (FAST, GENERAL):
        holder = begin(twins)
        assert lock(twins, holder, table, {"p_match": 3, "select": "a"})["count"] == 1
        other = begin(twins)
        assert lock(twins, other, table, {"p_match": 3, "select": "a"}) == ("error", "55P03")
        assert all(event != "execute" for event, _ in audit(twins, other))
        twins.execute("select resilience.tx_rollback(%s)", (holder,))
        assert lock(twins, other, table, {"p_match": 3, "select": "a"})["count"] == 1
        twins.execute("select resilience.tx_rollback(%s)", (other,))


def test_a_row_another_database_transaction_locked_fails_at_once(
    twins: psycopg.Connection[Any], dsn: str
) -> None:
    with psycopg.connect(dsn) as other:
        other.execute("select 1 from fast where p_match = 2 for update")
        tx = begin(twins)
        assert lock(twins, tx, FAST, {"p_match": 2, "select": "b"}) == ("error", "55P03")
        assert claims(twins, FAST) == []


def test_another_users_transaction_is_not_found_before_anything_is_locked(
    twins: psycopg.Connection[Any], make_role: Callable[..., str], dsn: str
) -> None:
    make_role("lbk_user", member_of=("resilience_user",))
    twins.execute("grant select, update on fast to lbk_user")
    tx = begin(twins)  # the superuser's
    with psycopg.connect(make_role("lbk_user"), autocommit=True) as user:
        assert lock(user, tx, FAST, {"p_match": 1, "select": "a"}) == ("error", "RZ001")
    assert claims(twins, FAST) == []


def test_rows_hidden_by_row_level_security_are_neither_returned_nor_claimed(
    twins: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    make_role("lbk_rls", member_of=("resilience_user",))
    for table in (FAST, GENERAL):
        name = sql.Identifier(table)
        twins.execute(sql.SQL("grant select, update on {} to lbk_rls").format(name))
        twins.execute(sql.SQL("alter table {} enable row level security").format(name))
        twins.execute(
            sql.SQL("create policy only_a on {} to lbk_rls using ({} = 'a')").format(
                name, sql.Identifier("select")
            )
        )
    with psycopg.connect(make_role("lbk_rls"), autocommit=True) as user:
        tx = begin(user)
        for table in (FAST, GENERAL):
            hidden = lock(user, tx, table, {"p_match": 2, "select": "b"})
            assert (hidden["data"], hidden["count"]) == ([], 0)
            seen = lock(user, tx, table, {"p_match": 1, "select": "a"})
            assert seen["count"] == 1
        user.execute("select resilience.tx_rollback(%s)", (tx,))
    assert claims(twins, FAST) == claims(twins, GENERAL) == []


def test_a_caller_with_column_grants_only_gets_the_granted_columns(
    twins: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    """No table SELECT grant: the general path, which returns only the
    columns the caller may read (and refuses the lock: a known limitation,
    docs/transactions.md), never the fast path's whole row."""
    make_role("lbk_cols", member_of=("resilience_user",))
    twins.execute('grant select ("p_match", "select"), update on fast to lbk_cols')
    with psycopg.connect(make_role("lbk_cols"), autocommit=True) as user:
        tx = begin(user)
        result = lock(user, tx, FAST, {"p_match": 1, "select": "a"})
        assert result == ("error", "42501") or all(
            set(row) <= {"p_match", "select"} for row in result["data"]
        )


def test_renamed_key_column_is_locked_by_its_new_name(twins: psycopg.Connection[Any]) -> None:
    twins.execute('alter table fast rename column "select" to "from"')
    tx = begin(twins)
    assert lock(twins, tx, FAST, {"p_match": 1, "select": "a"}) == ("error", "42703")
    result = lock(twins, tx, FAST, {"p_match": 1, "from": "a"})
    assert (result["count"], result["data"][0]["from"]) == (1, "a")
    assert twins.execute(
        "select descriptor ? 'lock_by_key' from resilience.managed_tables"
        " where relation = 'fast'::regclass"
    ).fetchone() == (True,)


def test_partitioned_table_locks_by_key_in_the_right_partition(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("""
        create table events (region text, id int, note text, primary key (region, id))
            partition by list (region);
        create table events_eu partition of events for values in ('eu');
        create table events_us partition of events for values in ('us');
        insert into events values ('eu', 1, 'e'), ('us', 1, 'u');
        select resilience.manage_table('events');
    """)
    tx = begin(conn)
    result = lock(conn, tx, "events", {"region": "us", "id": 1})
    assert (result["count"], result["data"]) == (1, [{"region": "us", "id": 1, "note": "u"}])
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("update events set note = 'x' where region = 'us'")
    assert caught.value.sqlstate == "55P03"
    conn.execute("update events set note = 'x' where region = 'eu'")


def test_unmanage_drops_the_function_and_manage_brings_it_back(
    twins: psycopg.Connection[Any],
) -> None:
    function = twins.execute(
        "select descriptor ->> 'lock_by_key' from resilience.managed_tables"
        " where relation = 'fast'::regclass"
    ).fetchone()
    assert function is not None
    exists = "select to_regproc(%s) is not null"
    assert twins.execute(exists, function).fetchone() == (True,)
    twins.execute("select resilience.unmanage_table('fast')")
    assert twins.execute(exists, function).fetchone() == (False,)
    twins.execute("select resilience.manage_table('fast')")
    tx = begin(twins)
    assert lock(twins, tx, FAST, {"p_match": 1, "select": "a"})["count"] == 1


@pytest.mark.parametrize(
    ("match", "general"),
    [
        ({"p_match": 1, "select": "a"}, False),
        ({"p_match": 1, "select": "a", "v_ctid": "c1"}, True),
    ],
)
def test_only_a_match_on_exactly_the_key_skips_the_general_path(
    twins: psycopg.Connection[Any], match: Any, general: bool
) -> None:
    tx = begin(twins)
    with twins.transaction():
        twins.execute("set local track_functions = 'all'")
        twins.execute(
            "select resilience.tx_execute(%s, 'fast', 'lock', null, %s)", (tx, Jsonb(match))
        )
        calls = dict(
            twins.execute(
                "select case when funcname like '\\_lock\\_by\\_key\\_%%' then 'by key'"
                " else funcname end, calls from pg_stat_xact_user_functions"
                " where schemaname = 'resilience'"
            ).fetchall()
        )
    assert calls.get("by key") == 1
    assert ("_execute_sql" in calls) is general


def test_a_key_no_longer_unique_locks_every_matching_row_like_the_general_path(
    twins: psycopg.Connection[Any],
) -> None:
    """Without the DDL event trigger nothing regenerates the code when the
    primary key is dropped: the generated function must still lock what the
    general path locks, not just the first row."""
    twins.execute("alter event trigger resilience_managed_ddl_end disable")
    results = {}
    for table in (FAST, GENERAL):
        name = sql.Identifier(table)
        twins.execute(
            sql.SQL("alter table {} drop constraint {}").format(
                name, sql.Identifier(f"{table}_pkey")
            )
        )
        twins.execute(sql.SQL("insert into {} (p_match, \"select\") values (1, 'a')").format(name))
        tx = begin(twins)
        results[table] = (
            lock(twins, tx, table, {"p_match": 1, "select": "a"}),
            claims(twins, table),
        )
        twins.execute("select resilience.tx_rollback(%s)", (tx,))
    assert results[FAST] == results[GENERAL]
    # Two rows with one key cannot both be claimed: refused on both paths.
    assert results[FAST][0] == ("error", "55P03")


@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_lock_leaves_the_callers_row_security_as_it_was(
    twins: psycopg.Connection[Any], setting: str
) -> None:
    """The lock function turns row_security off only while it reads the
    table: the caller's setting holds again on return, in the same
    database transaction, on both paths."""
    for table in (FAST, GENERAL):
        tx = begin(twins)
        with twins.transaction():
            twins.execute("select set_config('row_security', %s, true)", (setting,))
            locked = twins.execute(
                "select resilience.tx_execute(%s, %s, 'lock', null, %s)",
                (tx, table, Jsonb({"p_match": 1, "select": "a"})),
            ).fetchone()
            assert locked is not None and locked[0]["count"] == 1
            assert twins.execute("select current_setting('row_security')").fetchone() == (setting,)
        twins.execute("select resilience.tx_rollback(%s)", (tx,))
