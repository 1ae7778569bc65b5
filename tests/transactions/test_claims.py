"""Claims (issue 4, item 1): a row written inside a logical transaction
belongs to it until commit or rollback. Any other write to it, from another
logical transaction or a plain statement, fails AT ONCE with 55P03 naming the
holder and its expiry; an expired holder is rolled back, then the write goes
through. Each test uses separate connections, as separate clients would."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from .conftest import begin, call, execute


@pytest.fixture
def clients(app: psycopg.Connection[Any], dsn: str):
    app.execute("insert into codes values ('a', 'A'), ('b', 'B')")
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
    yield conns
    for c in conns:
        c.close()


def claim_error(run) -> psycopg.Error:
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as caught:
        run()
    assert time.monotonic() - started < 5, "a claim conflict must not wait"
    assert caught.value.sqlstate == "55P03"
    return caught.value


def test_second_logical_transaction_fails_at_once_naming_holder_and_expiry(clients):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "one"}, {"code": "a"})
    other = begin(two)
    error = claim_error(
        lambda: execute(two, other, "codes", "update", {"label": "two"}, {"code": "a"})
    )
    message = error.diag.message_primary or ""
    expires = call(one, "tx_status", holder)["expires_at"]
    assert holder in message and "expires" in message
    assert expires[:19].replace("T", " ") in message
    # Nothing of the failed write remains; the other transaction is still usable.
    assert two.execute("select label from codes where code = 'a'").fetchone() == ("one",)
    execute(two, other, "codes", "update", {"label": "two"}, {"code": "b"})


@pytest.mark.parametrize(
    "statement",
    [
        "update codes set label = 'plain' where code = 'a'",
        "delete from codes where code = 'a'",
        "update codes set code = 'a2' where code = 'a'",
    ],
)
def test_plain_write_to_a_claimed_row_fails_at_once(clients, statement):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "one"}, {"code": "a"})
    claim_error(lambda: two.execute(statement))
    assert two.execute("select label from codes where code = 'a'").fetchone() == ("one",)


def test_plain_insert_of_a_key_the_transaction_deleted_fails(clients):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "delete", match={"code": "a"})
    claim_error(lambda: two.execute("insert into codes values ('a', 'intruder')"))
    call(one, "tx_rollback", holder)
    assert two.execute("select label from codes where code = 'a'").fetchone() == ("A",)


def test_truncate_of_a_table_with_claims_is_refused(clients):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "one"}, {"code": "a"})
    claim_error(lambda: two.execute("truncate codes cascade"))


def test_unclaimed_rows_stay_writable(clients):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "one"}, {"code": "a"})
    two.execute("update codes set label = 'free' where code = 'b'")
    assert two.execute("select label from codes where code = 'b'").fetchone() == ("free",)


# Request headers that do not name a logical transaction: the write is a
# plain one (the capture trigger's early exit, or the path after it), so a
# claimed row is refused and an unclaimed one is written and not captured.
NOT_A_TRANSACTION = [
    "",
    "{}",
    '{"x-resilience-tx": ""}',
    '{"x-resilience-tx": null}',
    '{"x-resilience-tx-trace": "abc"}',
    '{"x-request-id": "x-resilience-tx"}',
    '{"X-Resilience-Tx": "%s"}',
]


@pytest.mark.parametrize("headers", NOT_A_TRANSACTION)
def test_a_write_whose_headers_name_no_transaction_is_a_plain_write(clients, headers):
    one, two, _ = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "one"}, {"code": "a"})
    captured = "select (resilience.tx_status(%s) ->> 'operations')::int"
    before = one.execute(captured, (holder,)).fetchone()
    other = begin(two)
    value = headers.replace("%s", other)

    def write(statement: str) -> None:
        with two.transaction():
            two.execute("select set_config('request.headers', %s, true)", (value,))
            two.execute(statement)

    claim_error(lambda: write("update codes set label = 'plain' where code = 'a'"))
    write("update codes set label = 'plain' where code = 'b'")
    assert two.execute("select label from codes where code = 'b'").fetchone() == ("plain",)
    assert call(two, "tx_status", other)["operations"] == 0
    assert one.execute(captured, (holder,)).fetchone() == before


def test_commit_and_rollback_release_claims(clients):
    one, two, _ = clients
    for finish in ("tx_commit", "tx_rollback"):
        holder = begin(one)
        execute(one, holder, "codes", "update", {"label": finish}, {"code": "a"})
        call(one, finish, holder)
        two.execute("update codes set label = 'after' where code = 'a'")


def test_claims_and_the_claimed_table_marker_end_with_their_transaction(clients):
    """Plain writes look at resilience.claimed_tables first (one row per table
    and transaction) and compare keys only when their table has claims: the
    marker must exist exactly while claims do, however the transaction ends."""
    one, two, _ = clients
    held = (
        "select (select count(*) from resilience._claims()),"
        " (select count(*) from resilience.claimed_tables)"
    )
    for finish in ("tx_commit", "tx_rollback", "tx_reap"):
        holder = begin(one, timeout_ms=200) if finish == "tx_reap" else begin(one)
        execute(one, holder, "codes", "update", {"label": "held"}, {"code": "a"})
        execute(one, holder, "codes", "update", {"label": "held"}, {"code": "b"})
        assert one.execute(held).fetchone() == (2, 1)
        claim_error(lambda: two.execute("update codes set label = 'plain' where code = 'b'"))
        if finish == "tx_reap":
            time.sleep(0.3)
            one.execute("select resilience.tx_reap()")
        else:
            call(one, finish, holder)
        assert one.execute(held).fetchone() == (0, 0)
        two.execute("update codes set label = 'plain' where code = 'b'")


def test_expired_holder_is_rolled_back_then_the_write_goes_through(clients):
    one, two, three = clients
    holder = begin(one, timeout_ms=200)
    execute(one, holder, "codes", "update", {"label": "abandoned"}, {"code": "a"})
    time.sleep(0.3)
    # A logical transaction meeting the expired claim rolls the holder back first.
    writer = begin(two)
    execute(two, writer, "codes", "update", {"label": "two"}, {"code": "a"})
    status = three.execute(
        "select status from resilience.transactions where id = %s", (holder,)
    ).fetchone()
    assert status == ("timed_out",)
    call(two, "tx_commit", writer)
    assert three.execute("select label from codes where code = 'a'").fetchone() == ("two",)


def test_plain_write_on_expired_claim_names_it_then_goes_through_after_reap(clients):
    one, two, _ = clients
    holder = begin(one, timeout_ms=100)
    execute(one, holder, "codes", "update", {"label": "abandoned"}, {"code": "a"})
    time.sleep(0.2)
    error = claim_error(lambda: two.execute("update codes set label = 'plain' where code = 'a'"))
    assert "expired" in (error.diag.message_primary or "")
    assert call(two, "tx_reap") == 1
    two.execute("update codes set label = 'plain' where code = 'a'")
    assert two.execute("select label from codes where code = 'a'").fetchone() == ("plain",)


def test_concurrent_claimers_of_one_row_never_both_succeed(clients, dsn):
    """Many logical transactions race for the same row: exactly one wins, the
    others fail with 55P03 (none waits for a logical transaction to end)."""
    one, _, _ = clients
    racers = 6
    txs = [begin(one) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []

    def race(tx: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            try:
                execute(conn, tx, "codes", "update", {"label": tx}, {"code": "b"})
                outcomes.append("won")
            except psycopg.Error as exc:
                outcomes.append(exc.sqlstate or "?")

    threads = [threading.Thread(target=race, args=(tx,)) for tx in txs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["55P03"] * (racers - 1) + ["won"]
    winner = one.execute("select label from codes where code = 'b'").fetchone()[0]
    assert one.execute("select tx_id::text from resilience._claims()").fetchall() == [(winner,)]


def test_three_transactions_interleaved(clients):
    """A holds a, B holds b; A reaching for b and B for a both fail at once
    (with row locks this would be a deadlock); after A commits, B takes a."""
    one, two, three = clients
    a = begin(one)
    b = begin(two)
    execute(one, a, "codes", "update", {"label": "A"}, {"code": "a"})
    execute(two, b, "codes", "update", {"label": "B"}, {"code": "b"})
    claim_error(lambda: execute(one, a, "codes", "update", {"label": "A"}, {"code": "b"}))
    claim_error(lambda: execute(two, b, "codes", "update", {"label": "B"}, {"code": "a"}))
    claim_error(lambda: three.execute("update codes set label = 'C'"))
    call(one, "tx_commit", a)
    execute(two, b, "codes", "update", {"label": "B"}, {"code": "a"})
    call(two, "tx_commit", b)
    assert three.execute("select code, label from codes order by code").fetchall() == [
        ("a", "B"),
        ("b", "B"),
    ]


def _next_xid(conn: psycopg.Connection[Any]) -> int:
    """The next transaction id the server will assign (reading it assigns none)."""
    row = conn.execute("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def test_single_row_writes_and_locks_in_one_database_transaction_start_no_subtransaction(
    clients,
):
    """The conversion of a claim conflict into 55P03 needs an exception block,
    a subtransaction with an XID of its own. Entered on every statement, a
    batch of more than 64 captured writes in one database transaction
    overflows the backend's subtransaction cache, and every other session's
    snapshots then go to pg_subtrans until it ends. A statement of one row,
    with no other claims on the table, has nothing to convert: no
    subtransaction. A statement of several rows may hold a key twice (a
    cascade into its own table): it takes one."""
    one, two, _ = clients

    def xids_taken(attempt: int) -> tuple[int, int]:
        """XIDs taken by a batch of one-row statements in one database
        transaction, then by one statement of many rows."""
        tx = begin(one)
        before = _next_xid(two)
        with one.transaction():
            for i in range(100):
                execute(one, tx, "codes", "insert", {"code": f"k{attempt}.{i}", "label": "new"})
            for i in range(100):
                execute(one, tx, "codes", "lock", match={"code": f"k{attempt}.{i}"})
                execute(one, tx, "codes", "update", {"label": "one"}, {"code": f"k{attempt}.{i}"})
            execute(one, tx, "codes", "delete", match={"code": f"k{attempt}.0"})
        batch = _next_xid(two) - before
        before = _next_xid(two)
        with one.transaction():
            execute(one, tx, "codes", "update", {"label": "all"}, {"label": "one"})
        many = _next_xid(two) - before
        call(one, "tx_rollback", tx)
        return batch, many

    # The counter is the server's: autovacuum's ANALYZE of a table written
    # here takes XIDs of its own (pg_statistic rows), so one try may count
    # one more. Entering the trap on every statement would take 300.
    taken = [xids_taken(0)]
    while taken[-1] != (1, 2) and len(taken) < 3:
        taken.append(xids_taken(len(taken)))
    # The database transaction's own XID; then its own and the trap's.
    assert taken[-1] == (1, 2), taken
    assert two.execute("select count(*) from codes where code like 'k%'").fetchone() == (0,)


def test_with_claims_of_another_transaction_on_the_table_conflicts_are_still_55P03(clients):
    """Another transaction's claims on the table (not on these rows): each
    statement then takes the path that names a holder, and unclaimed rows
    still go through."""
    one, two, three = clients
    holder = begin(one)
    execute(one, holder, "codes", "update", {"label": "held"}, {"code": "a"})
    other = begin(two)
    execute(two, other, "codes", "update", {"label": "mine"}, {"code": "b"})
    execute(two, other, "codes", "lock", match={"code": "b"})
    execute(two, other, "codes", "insert", {"code": "c", "label": "new"})
    for run in (
        lambda: execute(two, other, "codes", "update", {"label": "x"}, {"code": "a"}),
        lambda: execute(two, other, "codes", "lock", match={"code": "a"}),
        lambda: execute(two, other, "codes", "delete", match={"code": "a"}),
    ):
        assert holder in (claim_error(run).diag.message_primary or "")
    call(two, "tx_rollback", other)
    call(one, "tx_rollback", holder)
    assert three.execute("select code, label from codes order by code").fetchall() == [
        ("a", "A"),
        ("b", "B"),
    ]


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_a_claim_committed_after_a_repeatable_read_snapshot_is_55P03(clients, isolation):
    """A lock by another logical transaction committed after this database
    transaction's snapshot: the snapshot cannot see the claim, the claim
    index can; the write is still refused with 55P03, not 23505."""
    one, two, _ = clients
    mine = begin(one)
    theirs = begin(two)
    one.execute(f"begin isolation level {isolation}")
    one.execute("select count(*) from codes").fetchone()  # the snapshot is taken
    execute(two, theirs, "codes", "lock", match={"code": "a"})
    claim_error(lambda: execute(one, mine, "codes", "update", {"label": "x"}, {"code": "a"}))
    one.execute("rollback")
    call(two, "tx_rollback", theirs)
    call(one, "tx_rollback", mine)


@pytest.mark.parametrize(
    "key", ["primary key deferrable initially deferred", "primary key deferrable"]
)
def test_a_deferrable_key_written_twice_is_55P03_not_a_unique_violation(app, dsn, key):
    """With the key's check deferred, a second writer of one key does not wait
    on the table's primary key but on the claim index: the claim conflict is
    still 55P03 naming the holder, whether the first writer is another
    logical transaction in flight or the same statement."""
    app.execute(f"create table dk (id int {key}, v text)")
    app.execute("select resilience.manage_table('dk')")
    first, second = begin(app), begin(app)
    with psycopg.connect(dsn) as one, psycopg.connect(dsn) as two:
        one.execute("set constraints all deferred")
        two.execute("set constraints all deferred")
        execute(one, first, "dk", "insert", {"id": 1, "v": "one"})
        outcome: list[Any] = []

        def second_writer() -> None:
            try:
                execute(two, second, "dk", "insert", {"id": 1, "v": "two"})
                outcome.append("written")
            except psycopg.Error as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=second_writer)
        waiter.start()
        time.sleep(0.5)  # it waits for the first writer's call, as a write does
        one.commit()
        waiter.join(30)
        (error,) = outcome
        assert isinstance(error, psycopg.Error) and error.sqlstate == "55P03"
        assert first in (error.diag.message_primary or "")
        two.rollback()
        # One statement writing a key twice, in a transaction alone on a table.
        header = f'{{"x-resilience-tx": "{second}"}}'
        two.execute("set constraints all deferred")
        two.execute("select set_config('request.headers', %s, true)", (header,))
        with pytest.raises(psycopg.Error) as twice:
            two.execute("insert into dk values (7, 'x'), (7, 'y')")
        assert twice.value.sqlstate == "55P03"
        two.rollback()
    call(app, "tx_rollback", first)
    call(app, "tx_rollback", second)
    assert app.execute("select count(*) from dk").fetchone() == (0,)
