"""`pgresilience install` of HEAD over 0.1.0 in use (DESIGN.md "Upgrades";
docs/transactions.md "Upgrade from 0.1.0"; docs/schema_tracking.md
"Restore, upgrade and OID changes").

0.1.0 holds live state: an active logical transaction with writes, a
savepoint and claims, an expired one not yet reaped, a committed one, a
shared circuit, recorded schema versions. After the upgrade every piece is
as the docs say, exactly, and the app goes on working.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgresilience import SchemaVersionManager, installer

APP = """
create table acct (id int primary key, bal int not null, note text);
insert into acct values (1, 100, 'a'), (2, 200, 'b'), (3, 300, 'c');
select resilience.manage_table('acct');
"""
UPGRADE_REASON = {"reason": "upgrade to typed images"}


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def _live_0_1_0(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The app's state under 0.1.0; returns the ids."""
    conn.execute(APP)
    committed = _one(conn, "select resilience.tx_begin(60000, 'done')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"note\": \"kept\"}', '{\"id\": 2}')",
        (committed,),
    )
    conn.execute("select resilience.tx_commit(%s)", (committed,))
    live = _one(conn, "select resilience.tx_begin(60000, 'live')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 101}', '{\"id\": 1}')",
        (live,),
    )
    conn.execute("select resilience.tx_savepoint(%s, 'sp1')", (live,))
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'insert', '{\"id\": 4, \"bal\": 400}')", (live,)
    )
    conn.execute("select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 3}')", (live,))
    expired = _one(conn, "select resilience.tx_begin(60000, 'expired')")
    conn.execute(
        "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 202}', '{\"id\": 2}')",
        (expired,),
    )
    # Expired a minute ago, and no tx_begin since: nothing reaped it yet.
    conn.execute(
        "update resilience.transactions set started_at = now() - interval '2 minutes',"
        " expires_at = now() - interval '1 minute' where id = %s",
        (expired,),
    )
    conn.execute(
        "select resilience._circuit_publish("
        "'ai-api', 'open', 30, 'too many failures', 'worker-1', 0.75, false)"
    )
    return {"committed": committed, "live": live, "expired": expired}


def test_upgrade_from_0_1_0_rolls_back_the_active_transactions_exactly(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        ids = _live_0_1_0(conn)
        audit_before = _one(conn, "select count(*) from resilience.audit_log")

        installer.install(bare_dsn)

        # Rows as before the active transactions, the committed write kept.
        assert conn.execute("select id, bal, note from acct order by id").fetchall() == [
            (1, 100, "a"),
            (2, 200, "kept"),
            (3, 300, "c"),
        ]
        statuses = conn.execute(
            "select label, status, outcome from resilience.transactions order by label"
        ).fetchall()
        assert statuses == [
            ("done", "committed", None),
            ("expired", "rolled_back", UPGRADE_REASON),
            ("live", "rolled_back", UPGRADE_REASON),
        ]
        audit = conn.execute(
            "select event, tx_id, detail from resilience.audit_log where id > %s order by id",
            (audit_before,),
        ).fetchall()
        assert sorted(audit, key=lambda r: str(r[1])) == sorted(
            [
                ("rollback", ids["live"], UPGRADE_REASON),
                ("rollback", ids["expired"], UPGRADE_REASON),
            ],
            key=lambda r: str(r[1]),
        )
        assert (
            _one(conn, "select count(*) from resilience.transactions where status = 'active'") == 0
        )


def test_upgrade_from_0_1_0_releases_claims_and_the_app_keeps_working(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        _live_0_1_0(conn)
        installer.install(bare_dsn)

        # The rows 0.1.0's transactions claimed take plain writes again.
        conn.execute("update acct set note = 'plain' where id in (1, 2)")
        # A new logical transaction captures, claims and rolls back exactly.
        tx = _one(conn, "select resilience.tx_begin(60000, 'after')")
        conn.execute(
            "select resilience.tx_execute(%s, 'acct', 'update', '{\"bal\": 1}', '{\"id\": 1}')",
            (tx,),
        )
        conn.execute(
            "select resilience.tx_execute(%s, 'acct', 'delete', null, '{\"id\": 3}')", (tx,)
        )
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("update acct set bal = 7 where id = 1")
        result = _one(conn, "select resilience.tx_rollback(%s)", tx)
        assert (result["success"], result["status"], result["restored_rows"]) == (
            True,
            "rolled_back",
            2,
        )
        assert conn.execute("select id, bal, note from acct order by id").fetchall() == [
            (1, 100, "plain"),
            (2, 200, "plain"),
            (3, 300, "c"),
        ]


def test_upgrade_from_0_1_0_keeps_the_shared_circuit_and_the_settings(bare_dsn, install_0_1_0):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        _live_0_1_0(conn)
        conn.execute(
            "update resilience.settings set value = case name"
            " when 'retention' then '1 day' when 'notify_postgrest' then 'off'"
            " when 'schema_tracked_schemas' then 'public,billing' when 'reap_batch' then '7' end"
            " where name in"
            " ('retention', 'notify_postgrest', 'schema_tracked_schemas', 'reap_batch')"
        )
        settings = "select name, value from resilience.settings order by name"
        settings_before = conn.execute(settings).fetchall()
        columns = "name, state, open_until, open_count, reason, failure_rate, updated_by, version"
        before = conn.execute(f"select {columns} from resilience.circuits").fetchall()
        installer.install(bare_dsn)
        assert conn.execute(f"select {columns} from resilience.circuits").fetchall() == before
        # Every 0.1.0 setting as the app left it; only the new one added.
        assert sorted(set(conn.execute(settings).fetchall()) - set(settings_before)) == [
            ("schema_diff_at_commit", "on")
        ]
        assert set(settings_before) <= set(conn.execute(settings).fetchall())
        health = [r[0] for r in conn.execute("select resilience.circuit_health()")]
        assert [(c["name"], c["state"], c["healthy"]) for c in health] == [
            ("ai-api", "open", False)
        ]
        # HEAD's own writer goes on from 0.1.0's row (an operator's reset).
        closed = _one(
            conn,
            "select resilience._circuit_publish('ai-api', 'closed', 0, 'reset', 'ops', 0, true)",
        )
        assert (closed["state"], closed["version"]) == ("closed", before[0][7] + 1)


def test_upgrade_from_0_1_0_records_no_version_and_the_next_migration_is_exactly_one(
    bare_dsn, install_0_1_0
):
    install_0_1_0(bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        _live_0_1_0(conn)
        versions = "select version, hash from resilience.schema_versions order by version"
        before = conn.execute(versions).fetchall()

        installer.install(bare_dsn)

        assert conn.execute(versions).fetchall() == before
        # A full re-read finds nothing the upgrade changed in the app's schema.
        refreshed = _one(conn, "select resilience.schema_refresh()")
        assert conn.execute(versions).fetchall() == before, refreshed
        conn.execute("alter table acct add column extra int")
        after = conn.execute(versions).fetchall()
        assert after[:-1] == before and len(after) == len(before) + 1
    # Rated in the database with PL/Python, else by the client (same module).
    with SchemaVersionManager(bare_dsn) as svm:
        changes = svm.changes_since(before[-1][0])
    assert [[(c["type"], c["table"], c["column"]) for c in v] for v in changes] == [
        [("column_added", "public.acct", "extra")]
    ]
