"""Upgrading a v1 install (jsonb restore points, release 0.1.0 = commit
dec13be) in place with `pgresilience install`: logical transactions active
during the upgrade are rolled back first, exactly, with the release being
replaced (status rolled_back, reason 'upgrade to typed images'); managed
tables get their typed images; new transactions work at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from releases import RELEASE_0_1_0, install_release, release_tree

from pgresilience import installer


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory, RELEASE_0_1_0)


def accounts(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("select a::text from accounts as a order by id")]


def test_active_transactions_are_rolled_back_exactly_and_capture_works_after(
    previous_release: Path, bare_dsn: str
) -> None:
    install_release(previous_release, bare_dsn)
    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        conn.execute("""
            create table accounts (id int primary key, owner text, balance numeric(12, 2));
            insert into accounts values (1, 'ann', 10.50), (2, 'bob', 3);
            select resilience.manage_table('accounts');
        """)
        before = accounts(conn)
        tx = str(conn.execute("select resilience.tx_begin()").fetchone()[0])  # type: ignore[index]
        write = "select resilience.tx_execute(%s, 'accounts', %s, %s, %s)"
        conn.execute(write, (tx, "update", Jsonb({"balance": 0}), Jsonb({"id": 1})))
        conn.execute(write, (tx, "insert", Jsonb({"id": 3, "owner": "cy"}), None))

    installer.install(bare_dsn)

    with psycopg.connect(bare_dsn, autocommit=True) as conn:
        status, outcome = conn.execute(
            "select status, outcome from resilience.transactions where id = %s", (tx,)
        ).fetchone()  # type: ignore[misc]
        assert (status, outcome["reason"]) == ("rolled_back", "upgrade to typed images")
        assert [
            r[0] for r in conn.execute("select a::text from accounts as a order by id")
        ] == before
        assert conn.execute(
            "select image_table is not null from resilience.managed_tables"
        ).fetchall() == [(True,)]
        assert conn.execute("select to_regclass('resilience.restore_points')").fetchone() == (None,)
        # The upgraded table captures and rolls back with the new storage.
        tx = str(conn.execute("select resilience.tx_begin()").fetchone()[0])  # type: ignore[index]
        conn.execute(
            "select resilience.tx_execute(%s, 'accounts', 'delete', null, '{\"id\": 2}')", (tx,)
        )
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("insert into accounts values (2, 'x')")
        assert caught.value.sqlstate == "55P03"
        conn.execute("select resilience.tx_rollback(%s)", (tx,))
        assert [
            r[0] for r in conn.execute("select a::text from accounts as a order by id")
        ] == before
