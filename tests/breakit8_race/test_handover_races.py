"""A claim passing from one transaction to the next while calls are in
flight: the next writer waits for the finishing *call* (a database row lock),
never for the logical transaction, and then writes over the restored row.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from .conftest import Race, Step

ROW_1 = '(1,"row 1",10,"")'


def test_execute_waits_for_a_rollback_in_flight_then_claims(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    race.execute(alice, first, "update", {"v": "alice"}, {"id": 1})
    alice.autocommit = False
    race.call(alice, "tx_rollback", first)
    blocked = Step(lambda: race.execute(bob, second, "update", {"n": 99}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    # bob wrote over the restored row, and its image is that row.
    assert blocked.outcome()["data"][0]["v"] == "row 1"
    race.call(bob, "tx_rollback", second)
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_execute_waits_for_a_commit_in_flight_then_claims(race: Race) -> None:
    """The commit's call is deleting the claim: the other writer's claim
    waits for that call (the claim index), then goes through over the
    committed row. No wait for the logical transaction, one for its call."""
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    race.execute(alice, first, "update", {"v": "alice"}, {"id": 1})
    alice.autocommit = False
    race.call(alice, "tx_commit", first)
    blocked = Step(lambda: race.execute(bob, second, "update", {"n": 99}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    assert blocked.outcome()["data"][0]["v"] == "alice"
    race.call(bob, "tx_rollback", second)
    assert race.rows()[0] == '(1,alice,10,"")'
    race.assert_settled()


def test_rollback_to_in_flight_hands_the_claim_over(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    race.call(alice, "tx_savepoint", first, "sp")
    race.execute(alice, first, "update", {"v": "alice"}, {"id": 1})
    alice.autocommit = False
    race.call(alice, "tx_rollback_to", first, "sp")
    blocked = Step(lambda: race.execute(bob, second, "update", {"n": 99}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    assert blocked.outcome()["data"][0]["v"] == "row 1"
    alice.autocommit = True
    race.call(alice, "tx_commit", first)
    race.call(bob, "tx_commit", second)
    assert race.rows()[0] == '(1,"row 1",99,"")'
    race.assert_settled()


def test_lock_in_flight_then_an_update_of_the_row_is_refused(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    alice.autocommit = False
    race.execute(alice, first, "lock", None, {"id": 1})
    blocked = Step(lambda: race.execute(bob, second, "update", {"n": 99}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    assert blocked.sqlstate() == "55P03"
    alice.autocommit = True
    race.call(alice, "tx_commit", first)
    race.call(bob, "tx_commit", second)
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_lock_meets_an_execute_in_flight_at_once(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    alice.autocommit = False
    race.execute(alice, first, "update", {"v": "alice"}, {"id": 1})
    bob.execute("set lock_timeout = 0")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(bob, second, "lock", None, {"id": 1})
    alice.commit()
    alice.autocommit = True
    race.call(alice, "tx_rollback", first)
    race.call(bob, "tx_rollback", second)
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_two_upserts_of_one_new_key_in_flight(race: Race) -> None:
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    alice.autocommit = False
    race.execute(alice, first, "upsert", {"id": 7, "v": "alice"})
    blocked = Step(lambda: race.execute(bob, second, "upsert", {"id": 7, "v": "bob"}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    alice.commit()
    # bob's upsert became an update of alice's claimed row: refused.
    assert blocked.sqlstate() == "55P03"
    alice.autocommit = True
    race.call(alice, "tx_rollback", first)
    race.call(bob, "tx_rollback", second)
    assert len(race.rows()) == 5
    race.assert_settled()


def test_execute_on_a_row_of_an_expired_transaction_reaps_it_first(race: Race) -> None:
    """ "A claim held by an expired transaction is resolved by rolling that
    transaction back first": bob's call reaps alice's and writes."""
    alice, bob = race.session(), race.session("bob")
    first = race.begin(alice)
    race.execute(alice, first, "update", {"v": "alice"}, {"id": 1})
    race.expire(first)
    second = race.begin(bob)  # (its own lazy reap did it already)
    assert race.status(first) == "timed_out"
    first = race.begin(alice)
    race.execute(alice, first, "update", {"v": "alice again"}, {"id": 1})
    race.expire(first)
    bob.execute("set statement_timeout = '10s'")
    assert race.execute(bob, second, "update", {"n": 99}, {"id": 1})["data"][0]["v"] == "row 1"
    assert race.status(first) == "timed_out"
    race.call(bob, "tx_commit", second)
    assert race.rows()[0] == '(1,"row 1",99,"")'
    race.assert_settled()


def test_header_write_racing_its_own_rollback(race: Race) -> None:
    """PostgREST's header mode locks the transaction only in the capture
    trigger, after the statement changed its rows: a rollback that starts in
    between waits for a row the write holds while the write waits for the
    transaction. PostgreSQL breaks the deadlock (40P01, retryable); either
    way the outcome is whole: rolled back with every captured row restored,
    or still active with the write captured."""
    alice = race.session()
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "alice"}, {"id": 1})
    race.admin.execute(
        """
        create function public.pause() returns trigger language plpgsql as $$
        begin perform pg_advisory_xact_lock_shared(8); return null; end $$;
        create trigger pause after update on public.acct
            for each row execute function public.pause();
        """
    )
    gate = race.session("gate", autocommit=False)
    gate.execute("select pg_advisory_xact_lock(8)")
    header = race.session()
    header.execute(
        "select set_config('request.headers', %s, false)",
        (json.dumps({"x-resilience-tx": str(tx)}),),
    )
    write = Step(lambda: header.execute("update public.acct set n = 11 where id = 1"))
    write.start()
    race.wait_blocked(race.pid(header))  # row 1 updated, paused in the user trigger
    roller = race.session()
    rollback = Step(lambda: race.call(roller, "tx_rollback", tx))
    rollback.start()
    race.wait_blocked(race.pid(roller))  # the undo waits for row 1
    gate.commit()
    states = {write.sqlstate(), rollback.sqlstate()}
    race.admin.execute("drop trigger pause on public.acct")
    if race.status(tx) == "rolled_back":
        assert states == {"40P01", None}
        assert race.rows()[0] == ROW_1
    else:
        assert states == {None, "40P01"}
        assert race.rows()[0] == '(1,alice,11,"")'
        race.call(alice, "tx_rollback", tx)
        assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_two_multi_row_calls_in_opposite_orders(race: Race) -> None:
    """Claims are checked after a statement wrote its rows, so two calls in
    flight that write the same rows in opposite orders still meet as database
    row locks: PostgreSQL breaks the deadlock (40P01 for one call, nothing of
    it kept); the claims then answer the retry at once (55P03)."""
    race.admin.execute(
        """
        create function public.pause() returns trigger language plpgsql as $$
        begin perform pg_advisory_xact_lock_shared(9); return new; end $$;
        create trigger pause before update on public.acct
            for each row execute function public.pause();
        """
    )
    gate = race.session("gate", autocommit=False)
    gate.execute("select pg_advisory_xact_lock(9)")
    alice, bob = race.session(), race.session("bob")
    first, second = race.begin(alice), race.begin(bob)
    forward = [{"id": 1, "v": "alice"}, {"id": 2, "v": "alice"}]
    backward = [{"id": 2, "v": "bob"}, {"id": 1, "v": "bob"}]
    one = Step(lambda: race.execute(alice, first, "upsert", forward))
    other = Step(lambda: race.execute(bob, second, "upsert", backward))
    one.start()
    race.wait_blocked(race.pid(alice))  # row 1 locked, paused before updating it
    other.start()
    race.wait_blocked(race.pid(bob))  # row 2 locked, paused
    gate.commit()
    states = [one.sqlstate(), other.sqlstate()]
    race.admin.execute("drop trigger pause on public.acct")
    assert sorted(states, key=str) == ["40P01", None]
    winner, loser = (
        ((alice, first), (bob, second)) if states[0] is None else ((bob, second), (alice, first))
    )
    retry = forward if loser[1] == first else backward
    with pytest.raises(psycopg.errors.LockNotAvailable):
        race.execute(loser[0], loser[1], "upsert", retry)
    race.call(loser[0], "tx_rollback", loser[1])
    race.call(winner[0], "tx_rollback", winner[1])
    assert race.rows()[:2] == [ROW_1, '(2,"row 2",20,"")']
    race.assert_settled()
