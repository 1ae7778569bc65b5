"""The bench-local designs that keep the contract of a captured write
(bench/_designs.py: statement-level and row-level capture, and the
statement-level one with privilege separation) keep it, so that
bench/tx_overhead.py and bench/claims_overhead.py compare the package with
designs that owe the same: the undo leaves every row as a real ROLLBACK
would (random statements, rows written several times, key changes), claims
refuse other writers with 55P03 and never wait, drift makes the undo raise
RZ005 and restore nothing, every statement has its journal and audit row,
and nothing is captured before the transaction check."""

from __future__ import annotations

import importlib.util
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from conftest import Server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import sql

COLUMNS = ["id", "grp", "v", "note"]
DESIGNS = ["contract_statement", "contract_row", "contract_separated"]


def _load_designs() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "_designs.py"
    spec = importlib.util.spec_from_file_location("bench_designs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


designs = _load_designs()


@pytest.fixture(scope="module")
def design_db(server: Server) -> Iterator[str]:
    name = f"pgr_contract_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:
            designs.make_common(conn)
            for design in DESIGNS:
                conn.execute(
                    sql.SQL(
                        "create table {} (id bigint primary key, grp int, v int, note text)"
                    ).format(sql.Identifier(design))
                )
                getattr(designs, design)(conn, design, COLUMNS)
                designs.contract_locks(conn, design)
                designs.contract_lock_full(conn, design)
                designs.contract_lock_separated(conn, design)
                # A user trigger writing the same table from inside a write
                # (the row design's stack of statements).
                conn.execute(
                    sql.SQL(
                        """
                        create function {fn}() returns trigger language plpgsql as $$
                        begin
                            if new.note = 'echo' then
                                insert into {t} values (new.id + 1000, new.grp, new.v, 'echoed');
                            end if;
                            return null;
                        end $$;
                        create trigger echo after insert on {t}
                            for each row execute function {fn}();
                        -- A trigger rewriting the row its statement just
                        -- wrote: its nested statement is numbered first.
                        create function {touch}() returns trigger language plpgsql as $$
                        begin
                            if new.note = 'touch' then
                                update {t} set note = 'touched' where id = new.id;
                            end if;
                            return null;
                        end $$;
                        create trigger touch after insert on {t}
                            for each row execute function {touch}();
                        """
                    ).format(
                        fn=sql.Identifier(f"{design}_echo"),
                        touch=sql.Identifier(f"{design}_touch"),
                        t=sql.Identifier(design),
                    )
                )
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture(params=DESIGNS)
def table(request: pytest.FixtureRequest, design_db: str) -> Iterator[tuple[str, str]]:
    """A design's table holding rows 1..20, no images, no claims."""
    name: str = request.param
    with psycopg.connect(design_db, autocommit=True) as conn:
        reset(conn, name)
    yield design_db, name


def reset(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("set session_replication_role = replica")
    conn.execute(
        sql.SQL("truncate {}, {}").format(sql.Identifier(name), sql.Identifier(f"{name}_img"))
    )
    conn.execute("truncate floor_claimed, floor_journal, floor_audit")
    conn.execute(
        sql.SQL("insert into {} select g, g % 3, g, 'n' || g from generate_series(1, 20) g").format(
            sql.Identifier(name)
        )
    )
    conn.execute("set session_replication_role = origin")


def rows(conn: psycopg.Connection[Any], name: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            sql.SQL("select t::text from {} t order by id").format(sql.Identifier(name))
        ).fetchall()
    ]


def in_tx(conn: psycopg.Connection[Any], tx: Any, statement: sql.Composed, *args: Any) -> None:
    """One call of a logical transaction (its own database transaction)."""
    with conn.transaction():
        conn.execute("select set_config('floor.tx', %s, true)", (str(tx),))
        conn.execute(statement, args)


def undo(conn: psycopg.Connection[Any], tx: Any) -> Any:
    row = conn.execute("select floor_undo(%s)", (tx,)).fetchone()
    assert row is not None
    return row[0]


def statement_of(name: str, rnd: random.Random) -> tuple[sql.Composed, tuple[Any, ...]]:
    t = sql.Identifier(name)
    kind = rnd.choice(["insert", "update", "update", "move", "delete", "echo", "touch"])
    if kind == "insert":
        return sql.SQL("insert into {} values (%s, 1, %s, 'new') on conflict do nothing").format(
            t
        ), (rnd.randint(21, 40), rnd.randint(0, 99))
    if kind in ("echo", "touch"):
        return sql.SQL("insert into {} values (%s, 2, 0, %s) on conflict do nothing").format(t), (
            rnd.randint(41, 60),
            kind,
        )
    if kind == "update":
        return sql.SQL("update {} set v = v + %s, note = note || 'u' where grp = %s").format(t), (
            rnd.randint(1, 9),
            rnd.randint(0, 2),
        )
    if kind == "move":
        # A key change, onto a key no row has.
        key = rnd.randint(1, 40)
        return sql.SQL(
            "update {} set id = id + 100 where id = %s and not exists"
            " (select from {} where id = %s + 100)"
        ).format(t, t), (key, key)
    return sql.SQL("delete from {} where id = %s").format(t), (rnd.randint(1, 60),)


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**31), count=st.integers(1, 8))
def test_the_undo_leaves_every_row_as_a_real_rollback_would(
    table: tuple[str, str], seed: int, count: int
) -> None:
    dsn, name = table
    rnd = random.Random(seed)
    statements = [statement_of(name, rnd) for _ in range(count)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn, name)
        # The oracle: the same statements in one database transaction, rolled back.
        before = rows(conn, name)
        with conn.transaction(force_rollback=True):
            for statement, args in statements:
                conn.execute(statement, args)
        assert rows(conn, name) == before
        tx = designs.new_floor_tx(conn)
        for statement, args in statements:
            in_tx(conn, tx, statement, *args)
        journal = conn.execute(
            "select count(*), coalesce(sum(row_count), 0) from floor_journal where tx = %s", (tx,)
        ).fetchone()
        assert journal is not None and journal[0] >= count, "a journal row per statement"
        undo(conn, tx)
        assert rows(conn, name) == before
        images = conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(f"{name}_img"))
        ).fetchone()
        assert images == (0,), "the claims are released"


def test_claims_refuse_other_writers_at_once(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        mine = designs.new_floor_tx(conn)
        theirs = designs.new_floor_tx(conn)
        in_tx(conn, mine, sql.SQL("update {} set v = -1 where id in (1, 2)").format(t))
        in_tx(conn, mine, sql.SQL("update {} set id = 103 where id = 3").format(t))
        for key in (1, 2, 103):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                in_tx(conn, theirs, sql.SQL("update {} set v = 0 where id = %s").format(t), key)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute(sql.SQL("delete from {} where id = %s").format(t), (key,))
        # The old key of a moved row stays claimed: nobody else may take it.
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("insert into {} values (3, 0, 0, 'x')").format(t))
        # Unclaimed rows stay writable, by plain writes and other transactions.
        conn.execute(sql.SQL("update {} set v = 7 where id = 4").format(t))
        in_tx(conn, theirs, sql.SQL("update {} set v = 8 where id = 5").format(t))
        # The holder writes its own rows again.
        in_tx(conn, mine, sql.SQL("update {} set v = -2 where id = 1").format(t))
        undo(conn, mine)
        assert conn.execute(
            sql.SQL("select id, v from {} where id <= 5 order by id").format(t)
        ).fetchall() == [(1, 1), (2, 2), (3, 3), (4, 7), (5, 8)]


def write_behind_a_claim(
    dsn: str, name: str, write: Callable[[psycopg.Connection[Any]], object]
) -> Any:
    """Runs `write` on a second connection while a call of a logical
    transaction has updated row 6 (claiming it) and not committed yet; the
    call commits 0.3 s later. Returns the write's error (None if it passed)
    and the claiming transaction."""
    outcome: list[BaseException | None] = []
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        tx = designs.new_floor_tx(a)
        b.execute("set lock_timeout = '10s'")

        def other() -> None:
            try:
                write(b)
                outcome.append(None)
            except psycopg.Error as e:
                outcome.append(e)

        with a.transaction():
            a.execute("select set_config('floor.tx', %s, true)", (str(tx),))
            a.execute(sql.SQL("update {} set v = -1 where id = 6").format(sql.Identifier(name)))
            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.3)
        thread.join(15)
    assert len(outcome) == 1
    return outcome[0], tx


def test_a_claim_taken_meanwhile_is_refused_not_waited_for(table: tuple[str, str]) -> None:
    """A writer of another logical transaction that waited on the row lock
    of a claimer's call (PostgreSQL's own lock, any design) is refused with
    55P03 once that call commits: it does not wait for the logical
    transaction."""
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        second = designs.new_floor_tx(conn)
    error, _ = write_behind_a_claim(
        dsn,
        name,
        lambda b: in_tx(b, second, sql.SQL("update {} set v = -2 where id = 6").format(t)),
    )
    assert isinstance(error, psycopg.errors.LockNotAvailable)


def test_drift_makes_the_undo_restore_nothing(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = designs.new_floor_tx(conn)
        in_tx(conn, tx, sql.SQL("update {} set v = -1 where id in (1, 2)").format(t))
        in_tx(conn, tx, sql.SQL("update {} set v = -3 where id = 3").format(t))
        # A write behind the guard's back (triggers off) changes row 1.
        with conn.transaction():
            conn.execute("set local session_replication_role = replica")
            conn.execute(sql.SQL("update {} set v = 99 where id = 1").format(t))
        written = rows(conn, name)
        with pytest.raises(psycopg.Error) as raised:
            undo(conn, tx)
        assert raised.value.sqlstate == "RZ005"
        assert rows(conn, name) == written, "all or nothing: row 3 is not restored either"


def test_every_statement_has_its_journal_and_audit_row(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = designs.new_floor_tx(conn)
        in_tx(conn, tx, sql.SQL("update {} set v = 0 where grp = 1").format(t))
        in_tx(conn, tx, sql.SQL("insert into {} values (50, 0, 0, 'echo')").format(t))
        in_tx(conn, tx, sql.SQL("delete from {} where id = 2").format(t))
        journal = conn.execute(
            "select operation, row_count from floor_journal where tx = %s order by seq", (tx,)
        ).fetchall()
        # The echo trigger's nested insert is a statement of its own.
        assert sorted(journal) == sorted(
            [("update", 7), ("insert", 1), ("insert", 1), ("delete", 1)]
        )
        audit = conn.execute(
            "select count(*) from floor_audit where tx = %s and event = 'execute'", (tx,)
        ).fetchone()
        assert audit == (4,)


@pytest.mark.parametrize("status", ["committed", "missing"])
def test_nothing_is_written_before_the_transaction_check(
    table: tuple[str, str], status: str
) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = designs.new_floor_tx(conn) if status == "committed" else uuid.uuid4()
        conn.execute("update floor_tx set status = 'committed' where id = %s", (tx,))
        before = rows(conn, name)
        with pytest.raises(psycopg.Error) as raised:
            in_tx(conn, tx, sql.SQL("update {} set v = 0 where id = 1").format(t))
        assert raised.value.sqlstate == "RZ001"
        assert rows(conn, name) == before


def test_a_plain_write_to_a_table_without_claims_is_not_captured(
    table: tuple[str, str],
) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("update {} set v = 0").format(t))
        conn.execute(sql.SQL("insert into {} values (70, 0, 0, 'echo')").format(t))
        counted: Callable[[str], Any] = lambda q: conn.execute(q).fetchone()  # noqa: E731
        assert counted("select count(*) from floor_journal") == (0,)
        assert conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(f"{name}_img"))
        ).fetchone() == (0,)
        stack = conn.execute("select current_setting('floor.stack', true)").fetchone()
        assert stack is not None and stack[0] in (None, "")


def test_a_claim_taken_while_a_plain_write_waits_refuses_it(table: tuple[str, str]) -> None:
    """The table has no claims when the plain write starts; it waits on the
    row lock of a call that claims the row; once that call commits, the
    plain write is refused, not let through onto the claimed row."""
    dsn, name = table
    t = sql.Identifier(name)
    error, tx = write_behind_a_claim(
        dsn, name, lambda b: b.execute(sql.SQL("update {} set v = 999 where id = 6").format(t))
    )
    assert isinstance(error, psycopg.errors.LockNotAvailable)
    with psycopg.connect(dsn, autocommit=True) as conn:
        undo(conn, tx)
        assert conn.execute(sql.SQL("select v from {} where id = 6").format(t)).fetchone() == (6,)


def test_one_undo_goes_back_over_every_table_newest_first(design_db: str) -> None:
    with psycopg.connect(design_db, autocommit=True) as conn:
        for name in DESIGNS:
            reset(conn, name)
        before = {name: rows(conn, name) for name in DESIGNS}
        tx = designs.new_floor_tx(conn)
        for step in range(3):
            for name in DESIGNS:
                t = sql.Identifier(name)
                in_tx(
                    conn, tx, sql.SQL("update {} set v = v * 10 + %s where id <= 4").format(t), step
                )
                in_tx(conn, tx, sql.SQL("delete from {} where id = %s").format(t), 10 + step)
        undo(conn, tx)
        assert {name: rows(conn, name) for name in DESIGNS} == before
        assert conn.execute(
            "select count(*) from floor_journal where tx = %s", (tx,)
        ).fetchone() == (0,)


def test_a_cascade_into_a_table_without_capture_is_refused(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    child = sql.Identifier(f"{name}_child")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create table {} (id bigint primary key,"
                " parent bigint references {} on delete cascade)"
            ).format(child, t)
        )
        try:
            conn.execute(sql.SQL("insert into {} values (1, 1)").format(child))
            tx = designs.new_floor_tx(conn)
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                in_tx(conn, tx, sql.SQL("delete from {} where id = 1").format(t))
            assert conn.execute(sql.SQL("select count(*) from {}").format(child)).fetchone() == (1,)
            # Writes the action does not apply to are captured as usual.
            in_tx(conn, tx, sql.SQL("update {} set v = 0 where id = 1").format(t))
            undo(conn, tx)
        finally:
            conn.execute(sql.SQL("drop table {}").format(child))


def test_truncate_of_a_table_with_claims_is_refused(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = designs.new_floor_tx(conn)
        in_tx(conn, tx, sql.SQL("update {} set v = 0 where id = 1").format(t))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("truncate {}").format(t))
        undo(conn, tx)


def test_the_owner_undoes_an_expired_transaction(table: tuple[str, str]) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = rows(conn, name)
        tx = designs.new_floor_tx(conn)
        in_tx(conn, tx, sql.SQL("update {} set v = 0 where id = 1").format(t))
        conn.execute("update floor_tx set expires_at = now() - interval '1 s' where id = %s", (tx,))
        with pytest.raises(psycopg.Error) as raised:
            in_tx(conn, tx, sql.SQL("update {} set v = 1 where id = 2").format(t))
        assert raised.value.sqlstate == "RZ001"
        undo(conn, tx)
        assert rows(conn, name) == before


@pytest.mark.parametrize("kind", ["claim", "update", "full"])
def test_a_lock_claims_the_row_and_the_undo_releases_it(table: tuple[str, str], kind: str) -> None:
    dsn, name = table
    t = sql.Identifier(name)
    lock = sql.Identifier(f"floor_lock_{kind}_{name}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = rows(conn, name)
        mine = designs.new_floor_tx(conn)
        theirs = designs.new_floor_tx(conn)
        assert conn.execute(sql.SQL("select {}(%s, 3)").format(lock), (mine,)).fetchone() == (1,)
        assert conn.execute(sql.SQL("select {}(%s, 99)").format(lock), (mine,)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("select {}(%s, 3)").format(lock), (theirs,))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("update {} set v = 0 where id = 3").format(t))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            in_tx(conn, theirs, sql.SQL("delete from {} where id = 3").format(t))
        # The holder writes the row it locked.
        in_tx(conn, mine, sql.SQL("update {} set v = -3 where id = 3").format(t))
        undo(conn, mine)
        assert rows(conn, name) == before
        conn.execute(sql.SQL("update {} set v = 3 where id = 3").format(t))


def test_the_full_lock_takes_the_owner_by_role_and_jwt_subject(table: tuple[str, str]) -> None:
    dsn, name = table
    lock = sql.Identifier(f"floor_lock_full_{name}")
    claims = "select set_config('request.jwt.claims', %s, true)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        tx = designs.new_floor_tx(conn)
        conn.execute("update floor_tx set owner_sub = 'alice' where id = %s", (tx,))
        for who in (None, '{"sub": "bob"}'):
            with pytest.raises(psycopg.Error) as raised, conn.transaction():
                if who:
                    conn.execute(claims, (who,))
                conn.execute(sql.SQL("select {}(%s, 2)").format(lock), (tx,))
            assert raised.value.sqlstate == "RZ001"
        with conn.transaction():
            conn.execute(claims, ('{"sub": "alice"}',))
            assert conn.execute(sql.SQL("select {}(%s, 2)").format(lock), (tx,)).fetchone() == (1,)
        # The undo takes the owner the same way.
        with pytest.raises(psycopg.Error) as raised:
            undo(conn, tx)
        assert raised.value.sqlstate == "RZ001"
        with conn.transaction():
            conn.execute(claims, ('{"sub": "alice"}',))
            undo(conn, tx)


@pytest.fixture
def stranger(design_db: str) -> Iterator[str]:
    """A role with every privilege on the designs' tables and none on their
    images, claims, journal or audit: what a client of the package is."""
    role = f"pgr_stranger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(design_db, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
        for design in DESIGNS:
            conn.execute(
                sql.SQL("grant select, insert, update, delete on {} to {}").format(
                    sql.Identifier(design), sql.Identifier(role)
                )
            )
    yield role
    with psycopg.connect(design_db, autocommit=True) as conn:
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_only_the_separated_design_serves_a_writer_without_rights_on_its_images(
    table: tuple[str, str], stranger: str
) -> None:
    """Privilege separation, what the package owes and the two other
    designs leave out: the separated capture and undo run as the owner of
    the images, so a writer needs no right on them, and cannot read them."""
    dsn, name = table
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = rows(conn, name)
        tx = designs.new_floor_tx(conn)
        conn.execute("update floor_tx set owner = %s where id = %s", (stranger, tx))
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(stranger)))
        if name != "contract_separated":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                in_tx(conn, tx, sql.SQL("update {} set v = -1 where id = 1").format(t))
            return
        in_tx(conn, tx, sql.SQL("update {} set v = -1 where id = 1").format(t))
        in_tx(conn, tx, sql.SQL("insert into {} values (77, 0, 0, 'new')").format(t))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("select * from {}").format(sql.Identifier(f"{name}_img")))
        # Another role's transaction is not found.
        conn.execute("reset role")
        with pytest.raises(psycopg.Error) as raised:
            in_tx(conn, tx, sql.SQL("update {} set v = -2 where id = 2").format(t))
        assert raised.value.sqlstate == "RZ001"
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(stranger)))
        assert conn.execute("select floor_undo_separated(%s)", (tx,)).fetchone() == (2,)
        conn.execute("reset role")
        assert rows(conn, name) == before


def test_the_separated_lock_claims_only_rows_this_transaction_locked(
    table: tuple[str, str], stranger: str
) -> None:
    """Its SECURITY DEFINER claim is handed a (tableoid, ctid) and reads the
    row itself: a row this database transaction did not lock is refused
    (55P03), so is a caller who may not lock rows of the table (42501)."""
    dsn, name = table
    claim = sql.Identifier(f"floor_claim_separated_{name}")
    dispatch = sql.Identifier(f"floor_execute_{name}")
    where = sql.SQL("select tableoid, ctid from {} where id = %s").format(sql.Identifier(name))
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = rows(conn, name)
        tx = designs.new_floor_tx(conn)
        result = conn.execute(
            sql.SQL("select {}(%s, %s, 'lock', null, %s)").format(dispatch),
            (tx, name, '{"id": 4}'),
        ).fetchone()
        assert result is not None
        assert result[0] == {
            "success": True,
            "data": [{"id": 4, "grp": 1, "v": 4, "note": "n4"}],
            "count": 1,
        }
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("update {} set v = 0 where id = 4").format(sql.Identifier(name)))
        located = conn.execute(where, (5,)).fetchone()
        assert located is not None
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(sql.SQL("select {}(%s, %s, %s)").format(claim), (tx, *located))
        with conn.transaction():
            conn.execute(
                sql.SQL("select 1 from {} where id = 5 for update").format(sql.Identifier(name))
            )
            assert conn.execute(
                sql.SQL("select {}(%s, %s, %s)").format(claim), (tx, *located)
            ).fetchone() == (1,)
        theirs = designs.new_floor_tx(conn)
        conn.execute("update floor_tx set owner = %s where id = %s", (stranger, theirs))
        conn.execute(
            sql.SQL("revoke update on {} from {}").format(
                sql.Identifier(name), sql.Identifier(stranger)
            )
        )
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(stranger)))
        located = conn.execute(where, (6,)).fetchone()
        assert located is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("select {}(%s, %s, %s)").format(claim), (theirs, *located))
        conn.execute("reset role")
        conn.execute(
            sql.SQL("grant update on {} to {}").format(
                sql.Identifier(name), sql.Identifier(stranger)
            )
        )
        undo(conn, tx)
        assert rows(conn, name) == before
