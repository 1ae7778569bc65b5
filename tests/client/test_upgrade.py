"""Upgrades (DESIGN.md "Upgrades"): the previous release (v0.1.0, commit
dec13be, taken from git history) installed, then HEAD over it, gives the very
catalog a fresh HEAD install gives, with logical transactions active across
the upgrade (rolled back by it, exactly); the last release of the v2 core
(5b21c1c) upgrades in place with its transactions kept, their images still
restoring exactly; a release that changes a signature or removes a function
drops the old one first."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from releases import LAST_V2_CORE, RELEASE_0_1_0, install_release, release_tree

from pgresilience import TransactionManager, installer
from pgresilience.installer import install, print_sql
from pgresilience.sqlscript import function_probe, statements

from catalog import definition_listing

ROOT = Path(__file__).resolve().parents[2]

APP = """
create table ledger (id int primary key, amount int not null, note text);
insert into ledger values (1, 10, 'before'), (2, 20, 'before');
select resilience.manage_table('ledger');
"""
STATE = """
select (select string_agg(name || '=' || value, ',' order by name) from resilience.settings),
       (select version_num from resilience.alembic_version)
"""


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    return release_tree(tmp_path_factory, RELEASE_0_1_0)


@pytest.fixture(scope="module")
def last_release(tmp_path_factory) -> Path:
    return release_tree(tmp_path_factory, LAST_V2_CORE)


def _app_and_transactions(dsn: str) -> tuple[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(APP)
    with TransactionManager(dsn) as tm:
        undone, kept = tm.begin(timeout=600), tm.begin(timeout=600)
        tm.execute(undone, "ledger", "update", {"amount": 11, "note": "undone"}, {"id": 1}).unwrap()
        tm.execute(kept, "ledger", "update", {"amount": 22, "note": "kept"}, {"id": 2}).unwrap()
    return undone, kept


def _assert_catalog_of_a_fresh_install(upgraded_dsn: str, fresh_dsn: str) -> list[str]:
    """Install HEAD and the app into ``fresh_dsn``: the upgraded database's
    catalog listing must be the very same. Returns the upgraded listing."""
    install(fresh_dsn)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute(APP)
    upgraded, fresh = definition_listing(upgraded_dsn), definition_listing(fresh_dsn)
    assert [x for x in upgraded if x not in fresh] == []
    assert [x for x in fresh if x not in upgraded] == []
    return upgraded


@pytest.mark.parametrize("via", ["install", pytest.param("print-sql", marks=pytest.mark.plpython)])
def test_previous_release_upgrades_to_the_catalog_of_a_fresh_install(
    previous_release, server, bare_dsn, tmp_path, via
):
    fresh_name = "pgr_fresh_" + os.urandom(6).hex()
    fresh_dsn = server.create_database(fresh_name)
    try:
        install_release(previous_release, bare_dsn)
        undone, kept = _app_and_transactions(bare_dsn)

        if via == "install":
            report = install(bare_dsn)
            assert any("migrated" in line for line in report.actions), report.actions
        else:
            script = tmp_path / "upgrade.sql"
            script.write_text(print_sql())
            subprocess.run(
                [
                    "psql",
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-f",
                    str(script),
                    bare_dsn,
                ],
                check=True,
                capture_output=True,
            )

        upgraded = _assert_catalog_of_a_fresh_install(bare_dsn, fresh_dsn)
        with psycopg.connect(bare_dsn) as a, psycopg.connect(fresh_dsn) as b:
            assert a.execute(STATE).fetchone() == b.execute(STATE).fetchone()

        # What was active under v0.1.0 is rolled back by the upgrade, exactly
        # (revision 0005: v1's restore points cannot be carried over).
        with psycopg.connect(bare_dsn) as conn:
            statuses = dict(
                conn.execute("select id::text, status from resilience.transactions").fetchall()
            )
            assert (statuses[undone], statuses[kept]) == ("rolled_back", "rolled_back")
            rows = conn.execute("select id, amount, note from ledger order by id").fetchall()
            assert rows == [(1, 10, "before"), (2, 20, "before")]
        # And the upgraded database works: a logical transaction on the same table.
        with TransactionManager(bare_dsn) as tm:
            assert tm.active_transactions() == []
            with tm.transaction() as tx:
                tx.update("ledger", {"amount": 22, "note": "after the upgrade"}, {"id": 2})
            with pytest.raises(RuntimeError), tm.transaction() as tx:
                tx.update("ledger", {"amount": 0}, {"id": 1})
                raise RuntimeError("rolled back")
        with psycopg.connect(bare_dsn) as conn:
            rows = conn.execute("select id, amount, note from ledger order by id").fetchall()
        assert rows == [(1, 10, "before"), (2, 22, "after the upgrade")]

        # And installing again changes nothing.
        again = install(bare_dsn)
        assert not [line for line in again.actions if line.startswith("dropped")]
        assert definition_listing(bare_dsn) == upgraded
    finally:
        server.drop_database(fresh_name)


def test_the_last_release_upgrades_in_place_with_its_transactions(last_release, server, bare_dsn):
    """Typed images survive the upgrade: the generated code is regenerated,
    the catalog is a fresh install's, a transaction begun before it rolls
    back exactly after it, and another commits."""
    fresh_name = "pgr_fresh_" + os.urandom(6).hex()
    fresh_dsn = server.create_database(fresh_name)
    try:
        install_release(last_release, bare_dsn)
        undone, kept = _app_and_transactions(bare_dsn)
        install(bare_dsn)
        _assert_catalog_of_a_fresh_install(bare_dsn, fresh_dsn)
        with TransactionManager(bare_dsn) as tm:
            assert sorted(str(t["id"]) for t in tm.active_transactions()) == sorted([undone, kept])
            assert tm.rollback(undone)["status"] == "rolled_back"
            assert tm.commit(kept)["status"] == "committed"
        with psycopg.connect(bare_dsn) as conn:
            rows = conn.execute("select id, amount, note from ledger order by id").fetchall()
        assert rows == [(1, 10, "before"), (2, 22, "kept")]
    finally:
        server.drop_database(fresh_name)


@pytest.fixture
def next_release(tmp_path, monkeypatch) -> Path:
    """A copy of this release's sql/ that the installer will read instead."""
    sql = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql)
    original = installer.data_path

    def data_path(name: str) -> Path:
        return sql if name == "sql" else original(name)

    monkeypatch.setattr(installer, "data_path", data_path)
    return sql


def _signatures(conn: psycopg.Connection[Any], name: str) -> list[str]:
    rows = conn.execute(
        "select pg_get_function_arguments(oid) from pg_proc "
        "where proname = %s and pronamespace = any(array['resilience', 'public']::regnamespace[])"
        " order by 1",
        (name,),
    ).fetchall()
    return [r[0] for r in rows]


def _edit_definition(folder: Path, name: str, edit) -> None:
    """Rewrite (or, when ``edit`` returns None, remove) the statement defining
    resilience.NAME in the release copy."""
    for path in sorted(folder.glob("*.sql")):
        parts = list(statements(path.read_text(encoding="utf-8")))
        hits = [i for i, s in enumerate(parts) if function_probe(s) and f"resilience.{name}(" in s]
        if hits:
            edited = [edit(s) if i in hits else s for i, s in enumerate(parts)]
            path.write_text(";".join(s for s in edited if s is not None) + ";\n")
            return
    raise AssertionError(f"no definition of resilience.{name} in sql/")


def test_a_new_optional_parameter_and_a_removed_function(dsn, conn, next_release):
    # The next release: tx_status gains an optional parameter; tx_active is gone.
    before = _signatures(conn, "tx_status")
    assert len(before) == 2 and before[0] == before[1]  # resilience's and the wrapper

    def add_parameter(statement: str) -> str:
        head, _, rest = statement.partition("resilience.tx_status(")
        args, _, tail = rest.partition(")")
        return f"{head}resilience.tx_status({args}, include_rows boolean default false){tail}"

    _edit_definition(next_release, "tx_status", add_parameter)
    _edit_definition(next_release, "tx_active", lambda statement: None)

    report = install(dsn)
    dropped = [line for line in report.actions if line.startswith("dropped")]
    assert any("tx_status" in line for line in dropped), report.actions
    assert any("tx_active" in line for line in dropped), report.actions
    after = _signatures(conn, "tx_status")
    assert after == [before[0] + ", include_rows boolean DEFAULT false"] * 2
    assert _signatures(conn, "tx_active") == []
    tx = conn.execute("select resilience.tx_begin()").fetchone()[0]
    status = conn.execute("select public.tx_status(tx_id => %s)", (tx,)).fetchone()[0]
    assert status["status"] == "active"
    # Nothing of the removed function is left granted.
    assert conn.execute(
        "select count(*) from information_schema.routine_privileges "
        "where routine_name = 'tx_active'"
    ).fetchone() == (0,)
