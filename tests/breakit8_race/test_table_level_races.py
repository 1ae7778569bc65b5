"""Table-level statements that refuse a table with claims: unmanage_table
(55006) and TRUNCATE (55P03). A claim being taken by a call in flight must
count too: the call holds the table, so they wait for it, then must see it."""

from __future__ import annotations

from .conftest import Race, Step

ROW_1 = '(1,"row 1",10,"")'


def test_unmanage_waits_for_a_claim_in_flight_then_refuses(race: Race) -> None:
    alice = race.session()
    tx = race.begin(alice)
    alice.autocommit = False
    race.execute(alice, tx, "update", {"v": "alice"}, {"id": 1})
    admin = race.session("admin", superuser=True)
    unmanage = Step(lambda: admin.execute("select resilience.unmanage_table('public.acct')"))
    unmanage.start()
    race.wait_blocked(race.pid(admin))
    alice.commit()
    assert unmanage.sqlstate() == "55006"
    alice.autocommit = True
    assert race.call(alice, "tx_rollback", tx)["status"] == "rolled_back"
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_unmanage_after_the_claims_are_gone(race: Race) -> None:
    alice = race.session()
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "alice"}, {"id": 1})
    admin = race.session("admin", superuser=True)
    assert race.plain(admin, "select resilience.unmanage_table('public.acct')") == "55006"
    race.call(alice, "tx_rollback", tx)
    assert race.plain(admin, "select resilience.unmanage_table('public.acct')") is None
    assert race.rows()[0] == ROW_1


def test_truncate_waits_for_a_claim_in_flight_then_refuses(race: Race) -> None:
    alice = race.session()
    tx = race.begin(alice)
    alice.autocommit = False
    race.execute(alice, tx, "update", {"v": "alice"}, {"id": 1})
    admin = race.session("admin", superuser=True)
    truncate = Step(lambda: admin.execute("truncate public.acct"))
    truncate.start()
    race.wait_blocked(race.pid(admin))
    alice.commit()
    assert truncate.sqlstate() == "55P03"
    alice.autocommit = True
    race.call(alice, "tx_rollback", tx)
    assert race.rows()[0] == ROW_1
    race.assert_settled()
