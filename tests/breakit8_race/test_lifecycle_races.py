"""Two calls on one logical transaction at once: whichever holds the
transaction's row first finishes, the other sees its outcome. The final
state is the oracle's: status, rows (row::text), no claim left behind.

Each "open" step runs the call inside a database transaction left open
(autocommit off), so the next session's call meets it exactly there.
"""

from __future__ import annotations

import psycopg

from .conftest import Race, Step

ORIGINAL_1 = '(1,"row 1",10,"")'


def _written(race: Race, sub: str = "alice") -> tuple[object, list[str]]:
    """A transaction of `sub` that updated row 1 and inserted row 9; the
    rows before it."""
    before = race.rows()
    owner = race.session(sub)
    tx = race.begin(owner)
    race.execute(owner, tx, "update", {"v": "changed"}, {"id": 1})
    race.execute(owner, tx, "insert", {"id": 9, "v": "new"})
    return tx, before


def test_commit_then_rollback_sees_committed(race: Race) -> None:
    tx, _ = _written(race)
    first, second = race.session(), race.session()
    first.autocommit = False
    assert race.call(first, "tx_commit", tx)["status"] == "committed"
    blocked = Step(lambda: race.call(second, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(second))
    first.commit()
    assert blocked.sqlstate() == "RZ002"
    assert race.status(tx) == "committed"
    assert race.rows()[0] == '(1,changed,10,"")'
    assert race.rows()[-1] == '(9,new,0,"")'
    race.assert_settled()


def test_rollback_then_commit_sees_rolled_back(race: Race) -> None:
    tx, before = _written(race)
    first, second = race.session(), race.session()
    first.autocommit = False
    assert race.call(first, "tx_rollback", tx)["status"] == "rolled_back"
    blocked = Step(lambda: race.call(second, "tx_commit", tx))
    blocked.start()
    race.wait_blocked(race.pid(second))
    first.commit()
    assert blocked.sqlstate() == "RZ002"
    assert race.status(tx) == "rolled_back"
    assert race.rows() == before
    race.assert_settled()


def test_two_rollbacks_at_once_restore_once(race: Race) -> None:
    tx, before = _written(race)
    first, second = race.session(), race.session()
    first.autocommit = False
    assert race.call(first, "tx_rollback", tx)["restored_rows"] == 2
    blocked = Step(lambda: race.call(second, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(second))
    first.commit()
    # The second rollback finds the work done: harmless, nothing restored.
    assert blocked.outcome()["restored_rows"] == 0
    assert race.rows() == before
    events = race.admin.execute(
        "select count(*) from resilience.audit_log where tx_id = %s and event = 'rollback'", (tx,)
    ).fetchone()
    assert events == (1,)
    race.assert_settled()


def test_first_rollback_aborted_second_one_does_the_work(race: Race) -> None:
    tx, before = _written(race)
    first, second = race.session(), race.session()
    first.autocommit = False
    race.call(first, "tx_rollback", tx)
    blocked = Step(lambda: race.call(second, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(second))
    first.rollback()  # the client's connection dropped before COMMIT
    assert blocked.outcome()["restored_rows"] == 2
    assert race.rows() == before
    assert race.status(tx) == "rolled_back"
    race.assert_settled()


def test_rollback_waits_for_the_owners_execute_in_flight(race: Race) -> None:
    tx, before = _written(race)
    writer, roller = race.session(), race.session()
    writer.autocommit = False
    race.execute(writer, tx, "update", {"v": "in flight"}, {"id": 2})
    blocked = Step(lambda: race.call(roller, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(roller))
    writer.commit()
    # The write in flight belonged to the transaction: it is undone too.
    assert blocked.outcome()["restored_rows"] == 3
    assert race.rows() == before
    race.assert_settled()


def test_execute_after_a_rollback_in_flight_fails_finished(race: Race) -> None:
    tx, before = _written(race)
    roller, writer = race.session(), race.session()
    roller.autocommit = False
    race.call(roller, "tx_rollback", tx)
    blocked = Step(lambda: race.execute(writer, tx, "update", {"v": "late"}, {"id": 2}))
    blocked.start()
    race.wait_blocked(race.pid(writer))
    roller.commit()
    assert blocked.sqlstate() == "RZ002"
    assert race.rows() == before
    race.assert_settled()


def test_execute_after_a_rollback_in_flight_that_aborts_goes_on(race: Race) -> None:
    tx, _ = _written(race)
    roller, writer = race.session(), race.session()
    roller.autocommit = False
    race.call(roller, "tx_rollback", tx)
    blocked = Step(lambda: race.execute(writer, tx, "update", {"v": "late"}, {"id": 2}))
    blocked.start()
    race.wait_blocked(race.pid(writer))
    roller.rollback()
    assert blocked.outcome()["count"] == 1
    assert race.status(tx) == "active"
    assert race.call(writer, "tx_rollback", tx)["restored_rows"] == 3
    race.assert_settled()


def test_rollback_to_waits_for_an_execute_in_flight(race: Race) -> None:
    tx, _ = _written(race)
    owner = race.session()
    race.call(owner, "tx_savepoint", tx, "sp")
    at_savepoint = race.rows()
    writer, roller = race.session(), race.session()
    writer.autocommit = False
    race.execute(writer, tx, "update", {"v": "after sp"}, {"id": 3})
    blocked = Step(lambda: race.call(roller, "tx_rollback_to", tx, "sp"))
    blocked.start()
    race.wait_blocked(race.pid(roller))
    writer.commit()
    assert blocked.outcome()["restored_rows"] == 1
    assert race.rows() == at_savepoint
    # The claim only the undone statement held is gone: a plain write may
    # change row 3; row 1 is still claimed.
    plain = race.session("bob")
    assert race.plain(plain, "update public.acct set n = 3 where id = 3") is None
    assert race.plain(plain, "update public.acct set n = 1 where id = 1") == "55P03"
    race.call(owner, "tx_commit", tx)
    race.assert_settled()


def test_execute_after_a_rollback_to_in_flight_is_kept(race: Race) -> None:
    tx, _ = _written(race)
    owner = race.session()
    race.call(owner, "tx_savepoint", tx, "sp")
    race.execute(owner, tx, "update", {"v": "after sp"}, {"id": 3})
    roller, writer = race.session(), race.session()
    roller.autocommit = False
    race.call(roller, "tx_rollback_to", tx, "sp")
    blocked = Step(lambda: race.execute(writer, tx, "update", {"v": "after undo"}, {"id": 4}))
    blocked.start()
    race.wait_blocked(race.pid(writer))
    roller.commit()
    assert blocked.outcome()["count"] == 1
    rows = race.rows()
    assert rows[2] == '(3,"row 3",30,"")'
    assert rows[3] == '(4,"after undo",40,"")'
    # Its claim holds, and a full rollback restores it.
    plain = race.session("bob")
    assert race.plain(plain, "update public.acct set n = 4 where id = 4") == "55P03"
    race.call(owner, "tx_rollback", tx)
    assert race.rows()[3] == '(4,"row 4",40,"")'
    assert race.rows()[0] == ORIGINAL_1
    race.assert_settled()


def test_rollback_waits_for_a_savepoint_in_flight(race: Race) -> None:
    tx, before = _written(race)
    saver, roller = race.session(), race.session()
    saver.autocommit = False
    race.call(saver, "tx_savepoint", tx, "sp")
    blocked = Step(lambda: race.call(roller, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(roller))
    saver.commit()
    assert blocked.outcome()["status"] == "rolled_back"
    assert race.rows() == before
    race.assert_settled()


def test_savepoint_after_a_rollback_in_flight_fails_finished(race: Race) -> None:
    tx, before = _written(race)
    roller, saver = race.session(), race.session()
    roller.autocommit = False
    race.call(roller, "tx_rollback", tx)
    blocked = Step(lambda: race.call(saver, "tx_savepoint", tx, "sp"))
    blocked.start()
    race.wait_blocked(race.pid(saver))
    roller.commit()
    assert blocked.sqlstate() == "RZ002"
    assert race.rows() == before
    race.assert_settled()


def test_commit_waits_for_the_owners_execute_in_flight(race: Race) -> None:
    tx, _ = _written(race)
    writer, committer = race.session(), race.session()
    writer.autocommit = False
    race.execute(writer, tx, "update", {"v": "in flight"}, {"id": 2})
    blocked = Step(lambda: race.call(committer, "tx_commit", tx))
    blocked.start()
    race.wait_blocked(race.pid(committer))
    writer.commit()
    assert blocked.outcome()["operations"] == 3
    assert race.rows()[1] == '(2,"in flight",20,"")'
    plain = race.session("bob")
    assert race.plain(plain, "update public.acct set n = 2 where id = 2") is None
    race.assert_settled()


def test_rollback_killed_while_waiting_changes_nothing(race: Race) -> None:
    """The rollback's backend is terminated while its undo waits for a row
    lock: the database transaction dies whole, the logical one is untouched
    (active, its claims held), and a later rollback restores everything."""
    tx, before = _written(race)
    after = race.rows()
    reader = race.session("carol", autocommit=False)
    reader.execute("select * from public.acct where id = 1 for share")
    roller = race.session()
    blocked = Step(lambda: race.call(roller, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(roller))
    race.admin.execute("select pg_terminate_backend(%s)", (race.pid(roller),))
    blocked.join(30)
    assert isinstance(blocked.error, psycopg.OperationalError)  # the connection is gone
    reader.commit()
    assert race.status(tx) == "active"
    assert race.rows() == after
    plain = race.session("bob")
    assert race.plain(plain, "update public.acct set n = 1 where id = 1") == "55P03"
    assert race.call(race.session(), "tx_rollback", tx)["restored_rows"] == 2
    assert race.rows() == before
    race.assert_settled()
