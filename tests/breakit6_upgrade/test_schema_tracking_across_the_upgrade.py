"""docs/schema_tracking.md "Restore, upgrade and OID changes": after an
upgrade that reads more per object (0.1.0's snapshot format to HEAD's),
objects take the new keys silently: the upgrade records no version, a full
re-read finds nothing, and the next migration reports only its own change,
over every object kind the snapshot covers."""

from __future__ import annotations

from typing import Any

import psycopg

from pgresilience import SchemaVersionManager, installer

EVERY_KIND = """
create schema billing;
create type billing.mood as enum ('ok', 'sad');
create table billing.customers (
    id bigint generated always as identity primary key,
    email text not null unique,
    mood billing.mood default 'ok',
    score numeric(10, 2) check (score >= 0),
    total int generated always as (id * 2) stored
);
create index customers_lower_email on billing.customers (lower(email)) where email is not null;
create table billing.invoices (
    id int primary key,
    customer_id bigint references billing.customers (id) on delete cascade,
    amount int not null,
    day date not null
) ;
alter table billing.invoices enable row level security;
create policy own_invoices on billing.invoices using (amount > 0);
create table billing.events (id int, day int, primary key (id, day)) partition by range (day);
create table billing.events_1 partition of billing.events for values from (1) to (10);
create view billing.big_invoices as select i.id, c.email from billing.invoices as i
    join billing.customers as c on c.id = i.customer_id where i.amount > 100;
create materialized view billing.totals as
    select customer_id, sum(amount) from billing.invoices group by 1;
create function billing.total(c bigint) returns bigint language sql stable
    as $$ select sum(amount) from billing.invoices where customer_id = c $$;
create procedure billing.touch() language sql as $$ select 1 $$;
select resilience.manage_table('billing.invoices');
"""
VERSIONS = "select version, hash from resilience.schema_versions order by version"


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def test_the_migration_after_the_upgrade_from_0_1_0_reports_only_its_own_change(
    bare_dsn, install_0_1_0
):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute(EVERY_KIND)
        before = conn.execute(VERSIONS).fetchall()
        hash_before = _one(conn, "select resilience.schema_current()")["hash"]

        installer.install(bare_dsn)

        assert conn.execute(VERSIONS).fetchall() == before
        conn.execute("select resilience.schema_refresh()")
        assert conn.execute(VERSIONS).fetchall() == before
        # Equal schemas hash equally (OID-free canonical JSON): the upgrade
        # may change the format of the hash only if it says so in a version.
        assert _one(conn, "select resilience.schema_current()")["hash"] == hash_before
        conn.execute("alter table billing.invoices add column note text")
    # Rated in the database with PL/Python, else by the client (same module).
    with SchemaVersionManager(bare_dsn) as svm:
        changes = svm.changes_since(before[-1][0])
    assert [[(c["type"], c["table"], c["column"]) for c in v] for v in changes] == [
        [("column_added", "billing.invoices", "note")]
    ]
