"""`pgresilience plan FILE [--fail-on SEVERITY] [--json]` as CI runs it
(docs/schema_tracking.md "Preview and `pgresilience plan`", docs/cli.md):
exit 0 below --fail-on, 1 at or above it, 2 when the migration fails, the
preview cannot run or the file cannot be read; whatever happens, nothing is
committed, no version is recorded and no pending row is left."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgresilience.schema._core import ChangeList

from .conftest import fresh_database

SETUP = """
create table accounts (id int primary key, email text not null, note text);
insert into accounts values (1, 'a@example.com', null);
"""

State = tuple[Any, ...]


@pytest.fixture
def app(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(SETUP)
    return conn


@pytest.fixture(scope="module")
def shared(server: Any, template_db: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """One database for the module's plans that must leave it untouched
    (each checks that it did): (dsn, autocommit connection)."""
    for dsn in fresh_database(server, template_db):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SETUP)
            yield dsn, conn


def state(conn: psycopg.Connection[Any]) -> State:
    """What a plan must leave as it found: the live version, the number of
    versions, pending rows, audit rows, the table's columns and rows."""
    row = conn.execute(
        """
        select resilience.schema_current() ->> 'hash',
               (select count(*) from resilience.schema_versions),
               (select count(*) from resilience.schema_pending),
               (select count(*) from resilience.audit_log),
               (select string_agg(attname, ',' order by attnum) from pg_attribute
                where attrelid = 'accounts'::regclass and attnum > 0 and not attisdropped),
               (select string_agg(a::text, ';' order by id) from accounts as a)
        """
    ).fetchone()
    assert row is not None
    return tuple(row)


Plan = Callable[..., tuple[int, str, str]]


def test_exit_codes_follow_fail_on(app: psycopg.Connection[Any], dsn: str, run_plan: Plan) -> None:
    before = state(app)
    low = "alter table accounts add column nickname text;"  # nullable: low
    medium = "create index accounts_note_idx on accounts (note);"  # blocks writes: medium
    critical = "alter table accounts drop column note;"
    assert run_plan(dsn, low)[0] == 0  # default --fail-on high
    assert run_plan(dsn, low, "--fail-on", "low")[0] == 1
    assert run_plan(dsn, medium, "--fail-on", "medium")[0] == 1
    assert run_plan(dsn, medium, "--fail-on", "high")[0] == 0
    assert run_plan(dsn, critical)[0] == 1
    assert run_plan(dsn, critical, "--fail-on", "critical")[0] == 1
    code, out, _ = run_plan(dsn, critical)
    assert "critical  column_dropped  public.accounts.note" in out
    assert out.splitlines()[-1] == (
        "1 change(s), max severity critical: at or above --fail-on high; rolled back"
    )
    assert state(app) == before


def test_an_unknown_severity_is_a_usage_error(dsn: str, run_plan: Plan) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_plan(dsn, "select 1;", "--fail-on", "severe")
    assert exit_.value.code == 2


def test_a_failing_migration_exits_2_with_its_error_and_leaves_nothing(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    before = state(app)
    migration = """
    alter table accounts add column plan_marker int;
    create table plan_new (id int);
    insert into accounts values (1, 'duplicate@example.com', null);
    """
    code, out, _ = run_plan(dsn, migration)
    assert code == 2
    assert out.startswith("migration failed (SQLSTATE 23505); nothing was committed:")
    assert "duplicate key value violates unique constraint" in out
    assert state(app) == before
    assert app.execute("select to_regclass('plan_new')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("name", "migration", "sqlstate"),
    [
        ("commit inside", "alter table accounts add column x int; commit; drop table accounts;",
         "0A000"),
        ("rollback inside", "alter table accounts add column x int; rollback;", "0A000"),
        ("begin in the middle",
         "alter table accounts add column x int; begin; drop table accounts;", "0A000"),
        ("savepoint", "savepoint s; drop table accounts; release savepoint s;", "0A000"),
        ("create index concurrently", "create index concurrently on accounts (note);", "25001"),
        ("vacuum", "alter table accounts add column x int; vacuum accounts;", "25001"),
        ("psql meta-command",
         "\\set ON_ERROR_STOP on\nalter table accounts drop column note;", "42601"),
        ("psql include", "\\i other.sql\n", "42601"),
        ("two wrapped transactions",
         "BEGIN;\ndrop table accounts;\nCOMMIT;\nBEGIN;\nselect 1;\nCOMMIT;\n", "0A000"),
    ],
)  # fmt: skip
def test_what_cannot_run_in_one_transaction_fails_the_plan(
    shared: tuple[str, psycopg.Connection[Any]],
    run_plan: Plan,
    name: str,
    migration: str,
    sqlstate: str,
) -> None:
    dsn, app = shared
    before = state(app)
    code, out, _ = run_plan(dsn, migration, "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["exit_code"]) == (2, False, 2)
    assert report["error"]["sqlstate"] == sqlstate, report["error"]
    assert state(app) == before


@pytest.mark.parametrize(
    "migration",
    [
        "",
        "\n\n   \n",
        "-- nothing to do yet\n/* a block\n comment */\n",
        "BEGIN;\nCOMMIT;\n",
        "\ufeff-- an editor's byte order mark\n",
        "select 1; select count(*) from accounts;",
    ],
    ids=["empty", "blank", "comments", "empty wrapper", "bom", "no ddl"],
)
def test_a_migration_without_ddl_is_no_schema_change(
    shared: tuple[str, psycopg.Connection[Any]], run_plan: Plan, migration: str
) -> None:
    dsn, app = shared
    before = state(app)
    code, out, _ = run_plan(dsn, migration)
    assert code == 0
    assert out.splitlines() == [
        "no schema change",
        "0 change(s), max severity none: below --fail-on high; rolled back",
    ]
    report = json.loads(run_plan(dsn, migration, "--json")[1])
    # Not the tables of the version before: this migration changed none.
    assert (report["change_count"], report["tables"], report["changes"]) == (0, [], [])
    assert state(app) == before


def test_a_wrapped_file_with_comments_runs_without_its_wrapper(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    migration = """-- 0042_drop_note.sql
    /* reviewed by ops */
    BEGIN TRANSACTION;
    alter table accounts drop column note;
    COMMIT WORK; -- done
    """
    code, out, _ = run_plan(dsn, migration, "--json")
    assert code == 1
    assert [(c["type"], c["severity"]) for c in json.loads(out)["changes"]] == [
        ("column_dropped", "critical")
    ]


def test_a_name_ending_in_end_is_not_the_wrappers_commit(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    """`begin;` without its COMMIT is not a wrapper: the last statement
    `... rename to backend;` must not be cut down to `... rename to back`."""
    code, out, _ = run_plan(dsn, "begin;\nalter table accounts rename to backend;\n", "--json")
    report = json.loads(out)
    assert "public.back" not in [c["table"] for c in report["changes"]]
    assert code == 2 and report["error"]["sqlstate"] == "0A000"
    code, out, _ = run_plan(dsn, "alter table accounts rename to backend; -- the end\n", "--json")
    assert code == 1
    assert [c["new_value"] for c in json.loads(out)["changes"]] == ["public.backend"]


def test_do_blocks_and_dynamic_sql_are_seen(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    migration = """
    do $$
    declare col text := 'no' || 'te';
    begin
        execute format('alter table %I drop column %I', 'accounts', col);
        if true then
            execute 'create table audit_' || 'trail (id int)';
        end if;
    end $$;
    """
    code, out, _ = run_plan(dsn, migration, "--json")
    report = json.loads(out)
    assert code == 1
    assert sorted((c["type"], c["table"], c["severity"]) for c in report["changes"]) == [
        ("column_dropped", "public.accounts", "critical"),
        ("table_added", "public.audit_trail", "low"),
    ]


def test_json_has_the_documented_fields(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    fields = {
        "ok", "exit_code", "fail_on", "error", "max_severity", "change_count", "tables", "changes"
    }  # fmt: skip
    migration = "alter table accounts add column n int;"
    code, out, _ = run_plan(dsn, migration, "--json", "--fail-on", "low")
    report = json.loads(out)
    assert set(report) == fields
    assert report["ok"] is True and report["exit_code"] == code == 1
    assert (report["fail_on"], report["error"], report["max_severity"]) == ("low", None, "low")
    assert (report["change_count"], report["tables"]) == (1, ["public.accounts"])
    change = report["changes"][0]
    documented = {"type", "table", "column", "old_value", "new_value", "severity", "reason"}
    assert documented | {"rule"} <= set(change)

    code, out, _ = run_plan(dsn, "alter table nowhere add column n int;", "--json")
    report = json.loads(out)
    assert set(report) == fields
    assert (report["ok"], report["exit_code"], code) == (False, 2, 2)
    assert report["error"]["sqlstate"] == "42P01"
    assert 'relation "nowhere" does not exist' in report["error"]["message"]
    assert report["max_severity"] is None and report["change_count"] is None
    assert (report["tables"], report["changes"]) == ([], [])


def test_an_unreadable_file_is_a_usage_error_not_a_verdict(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan, tmp_path: Any
) -> None:
    code, out, err = run_plan(dsn, b"alter table accounts drop column note; -- caf\xe9\n")
    assert (code, out) == (2, "")
    assert "is not UTF-8 text" in err
    code, out, err = run_plan(dsn, b"alter table accounts drop column note; -- caf\xe9\n", "--json")
    assert (code, out) == (2, "")  # usage errors go to stderr, even with --json
    from pgresilience import cli

    assert cli.main(["plan", str(tmp_path / "missing.sql"), "--dsn", dsn]) == 2


def test_a_nul_byte_fails_the_plan(app: psycopg.Connection[Any], dsn: str, run_plan: Plan) -> None:
    code, out, _ = run_plan(dsn, "alter table accounts drop column note; select '\x00';")
    assert code == 2
    assert "NUL" in out


def test_a_huge_migration_is_one_plan(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    """400 tables and 2 MB of comments, all in one transaction: one verdict."""
    filler = "-- " + "x" * 1000 + "\n"
    migration = "".join(
        f"create table bulk_{i} (id int primary key, v text);\n{filler * 5}" for i in range(400)
    )
    migration += "alter table accounts drop column note;\n"
    assert len(migration) > 2_000_000
    before = state(app)
    code, out, _ = run_plan(dsn, migration, "--json")
    report = json.loads(out)
    assert code == 1
    assert report["change_count"] == 401
    assert report["max_severity"] == "critical"
    assert state(app) == before


def test_a_migration_that_switches_role_is_still_rated(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan, server: Any
) -> None:
    """Supabase migrations switch roles (`set role ...`); the version is
    recorded at commit whoever the current role is (the fold is SECURITY
    DEFINER), so the preview must not fail because of the role the
    migration left behind."""
    with server.admin() as admin:
        if not admin.execute("select from pg_roles where rolname = 'b8_plain'").fetchone():
            admin.execute("create role b8_plain nologin")
            server.roles.add("b8_plain")
    app.execute("alter table accounts owner to b8_plain")
    migration = "set role b8_plain; alter table accounts drop column note;"
    code, out, _ = run_plan(dsn, "set role b8_plain; select 1;")
    assert code == 0, out
    code, out, _ = run_plan(dsn, migration, "--json")
    assert code == 1, out
    planned = json.loads(out)["changes"]
    assert [(c["type"], c["severity"]) for c in planned] == [("column_dropped", "critical")]
    # The oracle: the same migration committed for real records that change.
    with psycopg.connect(dsn) as real:
        real.execute(migration)
    last = ChangeList.from_row(
        app.execute("select resilience.schema_changes_since(0)").fetchall()[-1][0]
    )
    assert [(c["type"], c["severity"]) for c in last] == [("column_dropped", "critical")]


def test_with_tracking_switched_off_a_drop_is_not_waved_through(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    """A CI gate must not answer "no schema change" for a DROP TABLE because
    the setting schema_tracking is off: the preview then compares the whole
    catalog with the last version, as without event triggers."""
    app.execute("update resilience.settings set value = 'off' where name = 'schema_tracking'")
    code, out, _ = run_plan(dsn, "drop table accounts;", "--json")
    assert code == 1, out
    assert [(c["type"], c["severity"]) for c in json.loads(out)["changes"]] == [
        ("table_dropped", "critical")
    ]
    # ... and the setting is left as it was.
    assert app.execute(
        "select value from resilience.settings where name = 'schema_tracking'"
    ).fetchone() == ("off",)


def _wait_for_lock_wait(conn: psycopg.Connection[Any]) -> int:
    for _ in range(600):
        row = conn.execute(
            "select pid from pg_stat_activity where wait_event_type = 'Lock'"
            " and query like '%pgresilience_plan_run%'"
        ).fetchone()
        if row:
            return int(row[0])
        threading.Event().wait(0.05)
    raise AssertionError("the plan never waited for its lock")


def test_a_plan_whose_backend_is_killed_exits_2_and_commits_nothing(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    """An operator kills the plan's backend while its migration waits for a
    lock: the migration failed (2), it is not a connection problem (3)."""
    before = state(app)
    result: dict[str, Any] = {}
    with psycopg.connect(dsn) as holder:
        holder.execute("select * from accounts")  # ACCESS SHARE until rollback
        worker = threading.Thread(
            target=lambda: result.update(
                out=run_plan(dsn, "alter table accounts drop column note;", "--json")
            )
        )
        worker.start()
        try:
            pid = _wait_for_lock_wait(app)
            app.execute("select pg_terminate_backend(%s)", (pid,))
        finally:
            worker.join(60)
        holder.rollback()
    code, out, err = result["out"]
    assert code == 2, (out, err)
    assert json.loads(out)["error"]["sqlstate"] == "57P01"
    assert state(app) == before


def test_a_migration_that_kills_its_own_backend_exits_2(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    code, out, err = run_plan(
        dsn, "alter table accounts drop column note; select pg_terminate_backend(pg_backend_pid());"
    )
    assert code == 2, (out, err)
    assert out.startswith("migration failed (SQLSTATE 57P01); nothing was committed:")
    assert "cannot connect" not in err


def test_a_non_superuser_owner_plans_its_own_migrations(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan, make_role: Callable[..., str]
) -> None:
    """The documented set-up for an app: a role that owns its schema and is
    a resilience_user (the SQL API's grant)."""
    owner_dsn = make_role("b8_schema_owner", member_of=("resilience_user",))
    app.execute("create schema shop authorization b8_schema_owner")
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("create table shop.items (id int primary key, price numeric(10, 2))")
    before = state(app)
    migration = """
    alter table shop.items alter column price type numeric(12, 2);
    alter table shop.items add column sku text not null;
    do $$ begin execute 'create index on shop.items (sku)'; end $$;
    """
    code, out, _ = run_plan(owner_dsn, migration, "--json")
    report = json.loads(out)
    assert code == 1
    assert sorted((c["type"], c["severity"]) for c in report["changes"]) == [
        ("column_added", "high"),
        ("column_type_changed", "low"),
        ("index_added", "medium"),
    ]
    assert state(app) == before


def test_a_role_outside_resilience_user_gets_2_naming_the_privilege(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan, make_role: Callable[..., str]
) -> None:
    stranger_dsn = make_role("b8_stranger")
    app.execute("create schema stranger_area authorization b8_stranger")
    code, out, _ = run_plan(stranger_dsn, "create table stranger_area.t (id int);")
    assert code == 2
    assert "SQLSTATE 42501" in out and "permission denied" in out


def test_a_database_without_pgresilience_is_not_called_a_failed_migration(
    bare_dsn: str, run_plan: Plan
) -> None:
    code, out, _ = run_plan(bare_dsn, "create table t (id int);")
    assert code == 2
    assert out.splitlines()[0] == (
        "the plan could not start (the migration did not run) (SQLSTATE 3F000); "
        "nothing was committed:"
    )
    with psycopg.connect(bare_dsn) as conn:
        assert conn.execute("select to_regclass('t')").fetchone() == (None,)


def test_a_preview_cut_short_by_the_migrations_own_timeout_says_so(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    before = state(app)
    code, out, _ = run_plan(dsn, "set statement_timeout = '1ms'; drop table accounts;")
    assert code == 2
    assert out.startswith("the migration ran but its preview failed (SQLSTATE 57014)")
    assert state(app) == before


def test_a_migration_that_asks_not_to_be_tracked_is_still_planned(
    app: psycopg.Connection[Any], dsn: str, run_plan: Plan
) -> None:
    """resilience.installing = on (the installer's own switch) makes the event
    triggers collect nothing; the plan still sees the DROP."""
    code, out, _ = run_plan(dsn, "set local resilience.installing = 'on'; drop table accounts;")
    assert code == 1
    assert "critical  table_dropped  public.accounts" in out


def test_concurrent_plans_each_see_only_their_own_migration(
    shared: tuple[str, psycopg.Connection[Any]],
) -> None:
    """CI runs jobs in parallel against one database: four plans at once,
    each with its own migration, each rated alone; nothing committed."""
    from concurrent.futures import ThreadPoolExecutor

    from pgresilience.schema.plan import plan_sql

    dsn, app = shared
    before = state(app)
    migrations = {
        f"public.parallel_{i}": f"create table parallel_{i} (id int); "
        f"alter table accounts add column added_by_{i} int;"
        for i in range(4)
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        planned = pool.map(lambda m: plan_sql(dsn, m), migrations.values())
        results = dict(zip(migrations, planned, strict=True))
    for table, result in results.items():
        assert result.changes is not None, result.error
        assert sorted((c["type"], c["table"]) for c in result.changes) == [
            ("column_added", "public.accounts"),
            ("table_added", table),
        ]
    assert state(app) == before
