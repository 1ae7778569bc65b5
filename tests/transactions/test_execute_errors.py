"""tx_execute refuses bad input with a SQLSTATE and changes nothing
(issue 3, item 4). Each case checks the error code and that every table
and the transaction's restore points are exactly as before."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import begin, call, execute


@pytest.fixture
def ready(app: psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], str]:
    app.execute(
        "insert into users (name) values ('ada'), ('bob'); insert into codes values ('a', 'A')"
    )
    tx = begin(app)
    execute(app, tx, "codes", "insert", {"code": "mine"})
    return app, tx


CASES = [
    ("unknown table", ("nope", "insert", {"x": 1}, None), "42P01"),
    ("unknown schema", ("nowhere.users", "insert", {"name": "x"}, None), "42P01"),
    ("unknown column", ("users", "insert", {"name": "x", "nope": 1}, None), "42703"),
    ("unknown match column", ("users", "update", {"name": "x"}, {"nope": 1}), "42703"),
    ("unknown operation", ("users", "merge", {"name": "x"}, None), "22023"),
    ("upper-case operation", ("users", "INSERT", {"name": "x"}, None), "22023"),
    ("update without match", ("users", "update", {"name": "x"}, None), "22023"),
    ("update with empty match", ("users", "update", {"name": "x"}, {}), "22023"),
    ("delete without match", ("users", "delete", None, None), "22023"),
    ("delete with data", ("users", "delete", {"name": "x"}, {"id": 1}), "22023"),
    ("insert without data", ("users", "insert", None, None), "22023"),
    ("insert of a scalar", ("users", "insert", 5, None), "22023"),
    ("insert of an array of scalars", ("users", "insert", [1, 2], None), "22023"),
    (
        "rows with different columns",
        ("codes", "insert", [{"code": "x"}, {"label": "y"}], None),
        "22023",
    ),
    (
        "wrong JSON type for a column",
        ("users", "insert", {"name": "x", "balance": "lots"}, None),
        "22P02",
    ),
    (
        "object for an array column",
        ("users", "insert", {"name": "x", "tags": {"a": 1}}, None),
        "22P02",
    ),
    ("bad enum value", ("users", "insert", {"name": "x", "feeling": "meh"}, None), "22P02"),
    ("update with array data", ("users", "update", [{"name": "x"}], {"id": 1}), "22023"),
    ("not-null violation", ("users", "insert", {"name": None}, None), "23502"),
    ("check violation", ("profiles", "insert", {"user_id": 1, "bio": ""}, None), "23514"),
    ("foreign key violation", ("profiles", "insert", {"user_id": 99, "bio": "x"}, None), "23503"),
    (
        "value for identity ALWAYS on insert",
        ("users", "insert", {"id": 9, "name": "x"}, None),
        "428C9",
    ),
    ("unmanaged table", ("no_pk", "insert", {"x": 1}, None), "22023"),
]


def state(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute(
        "select (select jsonb_agg(u order by id) from users u),"
        " (select jsonb_agg(p) from profiles p),"
        " (select jsonb_agg(c order by code) from codes c), (select count(*) from no_pk),"
        " (select resilience._image_count()),"
        " (select count(*) from resilience._claims())"
    ).fetchone()


@pytest.mark.parametrize(("case", "args", "sqlstate"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_sqlstate_and_nothing_changed(ready, case, args, sqlstate):
    conn, tx = ready
    before = state(conn)
    with pytest.raises(psycopg.Error) as caught:
        execute(conn, tx, *args)
    assert caught.value.sqlstate == sqlstate, caught.value.diag.message_primary
    assert state(conn) == before
    assert call(conn, "tx_status", tx)["status"] == "active"


@pytest.mark.parametrize(
    ("finish", "sqlstate"),
    [("tx_commit", "RZ002"), ("tx_rollback", "RZ002")],
)
def test_finished_transaction_is_refused(ready, finish, sqlstate):
    conn, tx = ready
    call(conn, finish, tx)
    before = state(conn)
    with pytest.raises(psycopg.Error) as caught:
        execute(conn, tx, "codes", "insert", {"code": "late"})
    assert caught.value.sqlstate == sqlstate
    assert state(conn) == before


def test_expired_transaction_is_refused(app):
    tx = begin(app, timeout_ms=1)
    app.execute("select pg_sleep(0.01)")
    before = state(app)
    with pytest.raises(psycopg.Error) as caught:
        execute(app, tx, "codes", "insert", {"code": "late"})
    assert caught.value.sqlstate == "RZ003"
    assert state(app) == before


def test_unknown_transaction_is_refused(app):
    with pytest.raises(psycopg.Error) as caught:
        execute(app, "00000000-0000-4000-8000-000000000000", "codes", "insert", {"code": "x"})
    assert caught.value.sqlstate == "RZ001"
    assert app.execute("select count(*) from codes").fetchone() == (0,)


def test_update_matching_nothing_changes_nothing(ready):
    conn, tx = ready
    out = execute(conn, tx, "users", "update", {"name": "x"}, {"id": 12345})
    assert out == {"success": True, "data": [], "count": 0}


def test_match_null_means_is_null(ready):
    conn, tx = ready
    out = execute(conn, tx, "codes", "update", {"label": "was null"}, {"label": None})
    assert [r["code"] for r in out["data"]] == ["mine"]


def test_identifiers_are_quoted_never_spliced(ready):
    conn, tx = ready
    before = state(conn)
    for table in ["users; drop table codes; --", 'users"; drop table codes; --']:
        with pytest.raises(psycopg.Error) as caught:
            execute(conn, tx, table, "insert", {"name": "x"})
        assert caught.value.sqlstate in ("42P01", "22023")
    with pytest.raises(psycopg.Error) as caught:
        execute(conn, tx, "users", "insert", {'name") values (1); drop table codes; --': "x"})
    assert caught.value.sqlstate == "42703"
    assert state(conn) == before


def test_timeout_out_of_range_is_refused(app):
    for timeout in (0, -5, 10**9):
        with pytest.raises(psycopg.Error) as caught:
            app.execute("select resilience.tx_begin(%s)", (timeout,))
        assert caught.value.sqlstate == "22023"


@pytest.mark.parametrize("column", ["doc", "spot", "docs"])
def test_match_on_a_column_without_equality_is_22023_not_generated_sql(app, column):
    """json, point and json[] have no `=`: a match on them is refused with a
    documented SQLSTATE, in tx_execute and tx_run alike, and changes nothing."""
    app.execute("""
        create table shapes (id int primary key, doc json, spot point, docs json[]);
        insert into shapes values (1, '{"a": 1}', '(1,2)', array['{}'::json]);
        select resilience.manage_table('shapes');
    """)
    value = {"doc": {"a": 1}, "spot": "(1,2)", "docs": [{}]}[column]
    tx = begin(app)
    with pytest.raises(psycopg.Error) as caught:
        execute(app, tx, "shapes", "delete", None, {column: value})
    assert caught.value.sqlstate == "22023"
    batch = [{"table": "shapes", "operation": "delete", "match": {column: value}}]
    with pytest.raises(psycopg.Error) as caught:
        app.execute("select resilience.tx_run(%s)", (Jsonb(batch),))
    assert caught.value.sqlstate == "22023"
    assert app.execute("select count(*) from shapes").fetchone() == (1,)
    # A null match (IS NULL) needs no equality.
    assert execute(app, tx, "shapes", "update", {"id": 1}, {column: None})["count"] == 0
