"""Ratings a DBA relies on, checked against what PostgreSQL really does
(pg_relation_filenode: did the table get rewritten?)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from breakit11_dba.dba import changes, last_version, psql, refresh, versions_since


def _filenode(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("select pg_relation_filenode(%s::regclass)", (table,)).fetchone()
    assert row is not None
    return int(row[0])


def _one(dsn: str, conn: psycopg.Connection[Any], statement: str) -> tuple[dict[str, Any], bool]:
    """Runs one migration; (its one change, whether the table was rewritten)."""
    before, node = last_version(dsn)[0], _filenode(conn, "t")
    conn.execute(statement)
    versions = versions_since(dsn, before)
    assert len(versions) == 1 and len(versions[0]["changes"]) == 1
    return versions[0]["changes"][0], _filenode(conn, "t") != node


@pytest.fixture
def table(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(
        "create extension if not exists pgcrypto;"
        " create sequence invoice_no;"
        " create function next_invoice_no() returns bigint language sql volatile"
        "   as $$ select nextval('invoice_no') $$;"
        " create domain posint as integer check (value > 0);"
        " create table t (id int primary key, p posint, v varchar(10));"
        " insert into t values (1, 1, 'a')"
    )
    return dsn


@pytest.mark.parametrize(
    "default",
    [
        pytest.param("(random() * 10)::bigint", id="random"),
        pytest.param("nextval('invoice_no')", id="nextval"),
        pytest.param(
            "next_invoice_no()",
            id="app-volatile-function",
            marks=pytest.mark.xfail(
                strict=True, reason="volatility told by name (docs/schema_tracking.md, Limits)"
            ),
        ),
        pytest.param(
            "length(gen_random_bytes(8))",
            id="extension-volatile-function",
            marks=pytest.mark.xfail(
                strict=True, reason="volatility told by name (docs/schema_tracking.md, Limits)"
            ),
        ),
    ],
)
def test_a_column_with_a_volatile_default_is_a_high_rewrite(
    table: str, conn: psycopg.Connection[Any], default: str
) -> None:
    """column_added with a volatile default: high, the table is rewritten."""
    change, rewritten = _one(table, conn, f"alter table t add column c bigint default {default}")
    assert rewritten
    assert (change["type"], change["severity"]) == ("column_added", "high")


def test_a_stable_default_is_low_and_rewrites_nothing(
    table: str, conn: psycopg.Connection[Any]
) -> None:
    change, rewritten = _one(table, conn, "alter table t add column c timestamptz default now()")
    assert not rewritten
    assert (change["type"], change["severity"]) == ("column_added", "low")


@pytest.mark.xfail(
    strict=True, reason="a domain's base type is not in the snapshot (docs/schema_tracking.md)"
)
def test_a_domain_to_its_base_type_is_metadata_only(
    table: str, conn: psycopg.Connection[Any]
) -> None:
    """column_type_changed carries rewrites_table as PostgreSQL decides it:
    a domain to its base type rewrites nothing."""
    change, rewritten = _one(table, conn, "alter table t alter column p type integer")
    assert not rewritten
    assert change["rewrites_table"] is False and change["severity"] == "low"


def test_concurrently_is_rated_below_the_plain_form_and_an_invalid_index_is_flagged(
    table: str, conn: psycopg.Connection[Any]
) -> None:
    """CREATE INDEX CONCURRENTLY (its own transaction) is low, the plain form
    medium; a failed CONCURRENTLY leaves an INVALID index, reported high
    (index_invalid) by the next re-read of the table."""
    before = last_version(table)[0]
    conn.execute("create index concurrently t_v on t (v)")
    conn.execute("create index t_v2 on t (v)")
    assert changes(versions_since(table, before)) == [
        ("index_added", "low"),
        ("index_added", "medium"),
    ]
    conn.execute("insert into t values (2, 2, 'a')")
    before = last_version(table)[0]
    failed = psql(table, "create unique index concurrently t_v_unique on t (v);", check=False)
    assert failed.returncode != 0
    assert last_version(table)[0] == before  # the failed command fired nothing
    assert refresh(table)["changed"] is True
    assert changes(versions_since(table, before)) == [("index_invalid", "high")]


@pytest.mark.parametrize(
    ("migration", "severity"),
    [
        pytest.param(
            "alter policy own on docs using (true)",
            "critical",
            id="alter-permissive",
        ),
        pytest.param(
            "drop policy own on docs; create policy own on docs using (true)",
            "critical",
            id="recreate-permissive",
        ),
        pytest.param(
            "alter policy hide on docs using (true)",
            "critical",
            id="alter-restrictive",
        ),
        pytest.param(
            "alter policy own on docs using (owner = session_user)", "high", id="other-expression"
        ),
    ],
)
def test_a_policy_made_using_true_is_as_critical_as_adding_one(
    dsn: str, conn: psycopg.Connection[Any], migration: str, severity: str
) -> None:
    """Adding a permissive policy USING (true) and dropping a restrictive one
    are critical (every row exposed). Making an existing policy USING (true)
    exposes the same rows, so it is critical too."""
    conn.execute(
        "create table docs (id int, owner text); alter table docs enable row level security;"
        " create policy own on docs using (owner = current_user);"
        " create policy hide on docs as restrictive using (owner <> 'banned')"
    )
    before = last_version(dsn)[0]
    with conn.transaction():
        for statement in migration.split("; "):
            conn.execute(statement)
    assert changes(versions_since(dsn, before)) == [("policy_changed", severity)]
