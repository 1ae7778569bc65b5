"""Claims against plain writes and other logical transactions, each step in
a chosen order. The promise (DESIGN.md 1, "Claims"): a write to a claimed
row fails at once with 55P03, nobody waits for a claim; a row lock some
*call* holds is waited for as PostgreSQL waits, no longer than that call.
"""

from __future__ import annotations

import psycopg
import pytest

from .conftest import Race, Step

ROW_1 = '(1,"row 1",10,"")'
ROW_3 = '(3,"row 3",30,"")'


def test_plain_write_on_a_claimed_row_fails_at_once(race: Race) -> None:
    owner, plain = race.session(), race.session("bob")
    tx = race.begin(owner)
    race.execute(owner, tx, "update", {"v": "claimed"}, {"id": 1})
    # A lock_timeout would turn a wait into 55P03 too: with none, only the
    # claim check can answer, and it must answer at once.
    plain.execute("set lock_timeout = 0")
    assert race.plain(plain, "update public.acct set n = 0 where id = 1") == "55P03"
    assert race.plain(plain, "delete from public.acct where id = 1") == "55P03"
    race.call(owner, "tx_rollback", tx)
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_plain_write_waiting_for_an_execute_in_flight_then_fails(race: Race) -> None:
    """The execute's call holds the row lock: the plain write waits for that
    call (a database lock, not the claim), then meets the claim: 55P03."""
    writer, plain = race.session(), race.session("bob")
    tx = race.begin(writer)
    writer.autocommit = False
    race.execute(writer, tx, "update", {"v": "claimed"}, {"id": 1})
    blocked = Step(lambda: plain.execute("update public.acct set n = 0 where id = 1"))
    blocked.start()
    race.wait_blocked(race.pid(plain))
    writer.commit()
    assert blocked.sqlstate() == "55P03"
    assert race.rows()[0] == '(1,claimed,10,"")'
    writer.autocommit = True
    race.call(writer, "tx_rollback", tx)
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_plain_insert_waiting_for_a_delete_in_flight_then_fails(race: Race) -> None:
    """A plain INSERT of the key a logical transaction is deleting."""
    writer, plain = race.session(), race.session("bob")
    tx = race.begin(writer)
    writer.autocommit = False
    race.execute(writer, tx, "delete", None, {"id": 3})
    blocked = Step(lambda: plain.execute("insert into public.acct (id, v) values (3, 'theirs')"))
    blocked.start()
    race.wait_blocked(race.pid(plain))
    writer.commit()
    assert blocked.sqlstate() == "55P03"
    writer.autocommit = True
    race.call(writer, "tx_rollback", tx)
    assert race.rows()[2] == ROW_3
    race.assert_settled()


def test_execute_meets_a_plain_write_in_flight(race: Race) -> None:
    """A plain write holds the row lock uncommitted: tx_execute waits for it
    (as any write would), and its before-image is the row as that write left
    it, so a rollback restores the plain write's committed value."""
    owner, plain = race.session(), race.session("bob", autocommit=False)
    tx = race.begin(owner)
    plain.execute("update public.acct set v = 'plain' where id = 1")
    blocked = Step(lambda: race.execute(owner, tx, "update", {"n": 11}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(owner))
    plain.commit()
    assert blocked.outcome()["data"][0]["v"] == "plain"
    race.call(owner, "tx_rollback", tx)
    assert race.rows()[0] == '(1,plain,10,"")'
    race.assert_settled()


def test_lock_meets_a_plain_write_in_flight_at_once(race: Race) -> None:
    """`lock` is FOR UPDATE NOWAIT: 55P03 at once, not a wait."""
    owner, plain = race.session(), race.session("bob", autocommit=False)
    tx = race.begin(owner)
    plain.execute("update public.acct set v = 'plain' where id = 1")
    owner.execute("set lock_timeout = 0")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(owner, tx, "lock", None, {"id": 1})
    plain.rollback()
    race.call(owner, "tx_rollback", tx)
    race.assert_settled()


def test_plain_write_on_a_claimed_row_after_the_holder_rolled_back(race: Race) -> None:
    owner, plain = race.session(), race.session("bob")
    tx = race.begin(owner)
    race.execute(owner, tx, "lock", None, {"id": 1})
    assert race.plain(plain, "update public.acct set n = 0 where id = 1") == "55P03"
    race.call(owner, "tx_rollback", tx)
    assert race.plain(plain, "update public.acct set n = 0 where id = 1") is None
    race.assert_settled()


def test_two_transactions_insert_the_same_new_key(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    race.execute(alice, first, "insert", {"id": 7, "v": "alice"})
    # The row exists (the claim's call committed): the key's own unique
    # index answers first, at once.
    with pytest.raises(psycopg.errors.UniqueViolation):
        race.execute(bob, second, "insert", {"id": 7, "v": "bob"})
    # An upsert reaches the row: the claim answers.
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(bob, second, "upsert", {"id": 7, "v": "bob"})
    race.call(alice, "tx_rollback", first)
    assert race.execute(bob, second, "insert", {"id": 7, "v": "bob"})["count"] == 1
    race.call(bob, "tx_commit", second)
    assert race.rows()[-1] == '(7,bob,0,"")'
    race.assert_settled()


def test_two_transactions_insert_the_same_new_key_in_flight(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    alice.autocommit = False
    race.execute(alice, first, "insert", {"id": 7, "v": "alice"})
    blocked = Step(lambda: race.execute(bob, second, "insert", {"id": 7, "v": "bob"}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    assert blocked.sqlstate() == "23505"
    alice.autocommit = True
    race.call(alice, "tx_rollback", first)
    race.call(bob, "tx_rollback", second)
    assert len(race.rows()) == 5
    race.assert_settled()


@pytest.mark.parametrize("first_back", ["deleter", "inserter"])
def test_delete_and_reinsert_of_one_key_across_transactions(race: Race, first_back: str) -> None:
    """One transaction deletes key 3; another inserts key 3 (the table no
    longer has it): the claim refuses the insert, so both roll back cleanly
    in either order."""
    alice, bob = race.session(), race.session("bob")
    deleter, inserter = race.begin(alice), race.begin(bob)
    race.execute(alice, deleter, "delete", None, {"id": 3})
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(bob, inserter, "insert", {"id": 3, "v": "bob"})
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(bob, inserter, "upsert", {"id": 3, "v": "bob"})
    order = [(alice, deleter), (bob, inserter)]
    if first_back == "inserter":
        order.reverse()
    for session, tx in order:
        assert race.call(session, "tx_rollback", tx)["status"] == "rolled_back"
    assert race.rows()[2] == ROW_3
    race.assert_settled()


def test_key_change_claims_the_old_key_against_reinsert(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    mover, inserter = race.begin(alice), race.begin(bob)
    race.execute(alice, mover, "update", {"id": 30}, {"id": 3})
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(bob, inserter, "insert", {"id": 3, "v": "bob"})
    plain = race.session("carol")
    assert race.plain(plain, "insert into public.acct (id, v) values (3, 'plain')") == "55P03"
    race.call(bob, "tx_rollback", inserter)
    race.call(alice, "tx_rollback", mover)
    assert race.rows()[2] == ROW_3
    assert len(race.rows()) == 5
    race.assert_settled()


def test_delete_and_reinsert_in_flight_across_transactions(race: Race) -> None:
    """The delete's call still open when the other transaction inserts the
    key: the insert waits for that call (the key's unique index), then the
    claim refuses it."""
    alice, bob = race.session(), race.session("bob")
    deleter, inserter = race.begin(alice), race.begin(bob)
    alice.autocommit = False
    race.execute(alice, deleter, "delete", None, {"id": 3})
    blocked = Step(lambda: race.execute(bob, inserter, "insert", {"id": 3, "v": "bob"}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    assert blocked.sqlstate() == "55P03"
    alice.autocommit = True
    race.call(bob, "tx_rollback", inserter)
    race.call(alice, "tx_rollback", deleter)
    assert race.rows()[2] == ROW_3
    race.assert_settled()


OLD_SNAPSHOT = (
    "A plain write's claim check reads the claims with its transaction's snapshot: at REPEATABLE "
    "READ or SERIALIZABLE, a claim committed after that snapshot is not seen, and the write goes "
    "through (docs/transactions.md, known limitations)"
)


def _old_snapshot(race: Race, isolation: str) -> object:
    plain = race.session("bob", autocommit=False)
    plain.execute(f"set transaction isolation level {isolation}")
    plain.execute("select count(*) from public.acct")  # the snapshot
    return plain


def _refused(race: Race, plain: object, statement: str) -> str | None:
    """The write's SQLSTATE, or its COMMIT's (None: it went through)."""
    state = race.plain(plain, statement)  # type: ignore[arg-type]
    if state is None:
        state = race.plain(plain, "commit")  # type: ignore[arg-type]
    plain.rollback()  # type: ignore[attr-defined]
    return state


@pytest.mark.xfail(strict=True, reason=OLD_SNAPSHOT)
@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_plain_insert_with_an_old_snapshot_into_a_deleted_claimed_key(
    race: Race, isolation: str
) -> None:
    """The key is free in the table; only the claim can refuse the insert.
    It went through, and the deleting transaction could not roll back
    (RZ005: the row it would re-insert exists)."""
    alice = race.session()
    plain = _old_snapshot(race, isolation)
    tx = race.begin(alice)
    race.execute(alice, tx, "delete", None, {"id": 3})
    state = _refused(race, plain, "insert into public.acct (id, v) values (3, 'plain')")
    assert state in ("55P03", "40001")
    assert race.call(alice, "tx_rollback", tx)["status"] == "rolled_back"
    assert race.rows()[2] == ROW_3


@pytest.mark.xfail(strict=True, reason=OLD_SNAPSHOT)
@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_plain_update_with_an_old_snapshot_of_a_locked_row(race: Race, isolation: str) -> None:
    """`lock` claims without writing the row, so nothing makes PostgreSQL's
    own serialization check fire: the plain update went through, the lost
    update `lock` exists to prevent."""
    alice = race.session()
    plain = _old_snapshot(race, isolation)
    tx = race.begin(alice)
    race.execute(alice, tx, "lock", None, {"id": 1})
    state = _refused(race, plain, "update public.acct set v = 'plain' where id = 1")
    assert state in ("55P03", "40001")


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_plain_update_with_an_old_snapshot_of_an_updated_row(race: Race, isolation: str) -> None:
    """A row the transaction wrote changed after the snapshot: PostgreSQL
    itself refuses (40001), and the rollback is clean."""
    alice = race.session()
    plain = _old_snapshot(race, isolation)
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "claimed"}, {"id": 1})
    state = _refused(race, plain, "update public.acct set v = 'plain' where id = 1")
    assert state == "40001"
    race.call(alice, "tx_rollback", tx)
    assert race.rows()[0] == ROW_1
    race.assert_settled()
