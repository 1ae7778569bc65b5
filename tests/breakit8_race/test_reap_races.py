"""The reaper (explicit tx_reap, or lazily inside another user's call)
against the owner's calls at expiry. Promise: the reaper skips what an owner's
call holds (FOR UPDATE SKIP LOCKED), never waits for it, and no call of one
user fails because of another user's transaction.

Where a step must start before expiry and meet the reaper after it, the
transaction gets a short timeout and the test polls until it expired; the
order of the steps is still the one named.
"""

from __future__ import annotations

import time
from typing import Any

from .conftest import Race, Step

ROW_1 = '(1,"row 1",10,"")'
SHORT_MS = 1500


def _wait_expired(race: Race, tx: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = race.admin.execute(
            "select expires_at < clock_timestamp() from resilience.transactions where id = %s",
            (tx,),
        ).fetchone()
        if row == (True,):
            return
        time.sleep(0.05)
    raise AssertionError("the transaction never expired")


def _bounded(race: Race, sub: str) -> Any:
    """Another user's session that must not wait: a wait would be 57014."""
    session = race.session(sub)
    session.execute("set statement_timeout = '10s'")
    return session


def test_owner_commit_after_a_reap_in_flight_fails_expired(race: Race) -> None:
    owner, reaper = race.session(), race.session("janitor")
    tx = race.begin(owner)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    race.expire(tx)
    reaper.autocommit = False
    assert race.call(reaper, "tx_reap") == 1
    blocked = Step(lambda: race.call(owner, "tx_commit", tx))
    blocked.start()
    race.wait_blocked(race.pid(owner))
    reaper.commit()
    assert blocked.sqlstate() == "RZ003"
    assert race.status(tx) == "timed_out"
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_owner_rollback_after_a_reap_in_flight_is_harmless(race: Race) -> None:
    owner, reaper = race.session(), race.session("janitor")
    tx = race.begin(owner)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    race.expire(tx)
    reaper.autocommit = False
    race.call(reaper, "tx_reap")
    blocked = Step(lambda: race.call(owner, "tx_rollback", tx))
    blocked.start()
    race.wait_blocked(race.pid(owner))
    reaper.commit()
    assert blocked.outcome() == {
        "success": True,
        "status": "timed_out",
        "restored_rows": 0,
        "conflicts": [],
    }
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_owner_execute_after_a_reap_in_flight_fails_expired(race: Race) -> None:
    owner, reaper = race.session(), race.session("janitor")
    tx = race.begin(owner)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    race.expire(tx)
    reaper.autocommit = False
    race.call(reaper, "tx_reap")
    blocked = Step(lambda: race.execute(owner, tx, "update", {"v": "late"}, {"id": 2}))
    blocked.start()
    race.wait_blocked(race.pid(owner))
    reaper.commit()
    assert blocked.sqlstate() == "RZ003"
    assert race.rows()[:2] == [ROW_1, '(2,"row 2",20,"")']
    race.assert_settled()


def test_reap_at_expiry_skips_the_owners_commit_in_flight(race: Race) -> None:
    owner = race.session()
    tx = race.begin(owner, timeout_ms=SHORT_MS)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    owner.autocommit = False
    assert race.call(owner, "tx_commit", tx)["status"] == "committed"
    _wait_expired(race, tx)
    # Explicit and lazy reaps alike: nothing to take, no wait.
    assert race.call(_bounded(race, "janitor"), "tx_reap") == 0
    assert race.begin(_bounded(race, "bob")) is not None
    owner.commit()
    assert race.status(tx) == "committed"
    assert race.rows()[0] == '(1,mine,10,"")'
    race.assert_settled()


def test_lazy_reap_at_expiry_skips_the_owners_execute_in_flight(race: Race) -> None:
    """The owner's write started before expiry and is still in its call: a
    lazy reap leaves the transaction alone (no wait), the write lands, and the
    next reap undoes it with the rest."""
    owner = race.session()
    tx = race.begin(owner, timeout_ms=SHORT_MS)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    owner.autocommit = False
    race.execute(owner, tx, "update", {"v": "in flight"}, {"id": 2})
    _wait_expired(race, tx)
    bob = _bounded(race, "bob")
    race.begin(bob)
    assert race.status(tx) == "active"
    owner.commit()
    assert race.rows()[1] == '(2,"in flight",20,"")'
    race.begin(bob)
    assert race.status(tx) == "timed_out"
    assert race.rows()[:2] == [ROW_1, '(2,"row 2",20,"")']
    race.assert_settled()


def test_lazy_reap_in_another_users_open_transaction_makes_the_owner_wait(race: Race) -> None:
    """bob's tx_begin reaps alice's expired transaction inside bob's database
    transaction, which bob (psycopg's default: no autocommit) keeps open.
    alice's next call waits for bob's COMMIT (a database lock, as any write
    of bob's would hold), then sees the reap's outcome: RZ003, nothing lost."""
    alice = race.session()
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "mine"}, {"id": 1})
    race.expire(tx)
    bob = race.session("bob", autocommit=False)
    race.begin(bob)
    blocked = Step(lambda: race.execute(alice, tx, "update", {"v": "late"}, {"id": 2}))
    blocked.start()
    race.wait_blocked(race.pid(alice))
    bob.commit()
    assert blocked.sqlstate() == "RZ003"
    assert race.status(tx) == "timed_out"
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_lazy_reap_leaves_a_row_lock_holder_alone(race: Race) -> None:
    """A plain `FOR SHARE` on a row the undo restores: the lazy reap in bob's
    tx_begin gives up after its lock_timeout, bob's call succeeds, and the
    transaction stays active and expired until the lock is gone."""
    alice = race.session()
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "mine"}, {"id": 1})
    race.expire(tx)
    reader = race.session("carol", autocommit=False)
    reader.execute("select * from public.acct where id = 1 for share")
    assert race.begin(_bounded(race, "bob")) is not None
    assert race.status(tx) == "active"
    reader.commit()
    assert race.call(race.session("janitor"), "tx_reap") == 1
    assert race.status(tx) == "timed_out"
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_reap_of_a_transaction_whose_rollback_is_in_flight(race: Race) -> None:
    """The owner's rollback holds the transaction when it expires: the
    reaper skips it; the owner's rollback finishes it (rolled_back)."""
    owner = race.session()
    tx = race.begin(owner, timeout_ms=SHORT_MS)
    race.execute(owner, tx, "update", {"v": "mine"}, {"id": 1})
    owner.autocommit = False
    race.call(owner, "tx_rollback", tx)
    _wait_expired(race, tx)
    assert race.call(_bounded(race, "janitor"), "tx_reap") == 0
    owner.commit()
    assert race.status(tx) == "rolled_back"
    assert race.rows()[0] == ROW_1
    race.assert_settled()
