"""An admin's forced retry of a `failed` transaction, while another logical
transaction holds a claim on a row the retry would restore.

A failed transaction's claims were released (the reaper contains failures),
so others may claim its rows again. `force` overwrites rows changed outside
the transaction; a row another *active* transaction claims is not merely
changed: overwriting it takes the row from under that transaction's claim,
and its commit would then silently keep the forced value.
"""

from __future__ import annotations

import psycopg

from .conftest import Race, Step

ROW_1 = '(1,"row 1",10,"")'


def _failed_transaction(race: Race) -> object:
    """alice's transaction updated row 1; a write that bypassed the guards
    (replica mode) changed the row, so its reap failed: `failed`, claims
    released, images kept for a forced retry."""
    alice = race.session()
    tx = race.begin(alice)
    race.execute(alice, tx, "update", {"v": "alice"}, {"id": 1})
    race.admin.execute("set session_replication_role = replica")
    race.admin.execute("update public.acct set v = 'bypass' where id = 1")
    race.admin.execute("reset session_replication_role")
    race.expire(tx)
    race.admin.execute("select resilience.tx_reap()")
    assert race.status(tx) == "failed"
    return tx


def test_forced_retry_does_not_overwrite_another_transactions_claim(race: Race) -> None:
    failed = _failed_transaction(race)
    bob = race.session("bob")
    other = race.begin(bob)
    race.execute(bob, other, "update", {"n": 99}, {"id": 1})
    state = race.plain(race.admin, f"select resilience.tx_rollback('{failed}', force => true)")
    assert state == "55P03"
    assert race.status(failed) == "failed"
    race.call(bob, "tx_commit", other)
    assert race.rows()[0] == '(1,bypass,99,"")'
    race.assert_settled()


def test_forced_retry_after_the_other_transaction_finished(race: Race) -> None:
    failed = _failed_transaction(race)
    bob = race.session("bob")
    other = race.begin(bob)
    race.execute(bob, other, "update", {"n": 99}, {"id": 1})
    race.call(bob, "tx_commit", other)
    result = race.admin.execute(
        "select resilience.tx_rollback(%s, force => true)", (failed,)
    ).fetchone()
    assert result is not None and result[0]["status"] == "rolled_back"
    assert race.rows()[0] == ROW_1
    race.assert_settled()


def test_forced_retry_waits_for_a_claim_in_flight_then_refuses(race: Race) -> None:
    failed = _failed_transaction(race)
    bob = race.session("bob")
    other = race.begin(bob)
    bob.autocommit = False
    race.execute(bob, other, "update", {"n": 99}, {"id": 1})
    admin = race.session("admin", superuser=True)
    retry = Step(
        lambda: race.admin_call(admin, "select resilience.tx_rollback(%s, force => true)", failed)
    )
    retry.start()
    race.wait_blocked(race.pid(admin))
    bob.commit()
    assert retry.sqlstate() == "55P03"
    bob.autocommit = True
    race.call(bob, "tx_rollback", other)
    assert race.rows()[0] == '(1,bypass,10,"")'
    assert race.status(failed) == "failed"
    race.assert_settled()


def test_claim_after_a_forced_retry_in_flight_goes_on_the_restored_row(race: Race) -> None:
    failed = _failed_transaction(race)
    admin = race.session("admin", autocommit=False, superuser=True)
    race.admin_call(admin, "select resilience.tx_rollback(%s, force => true)", failed)
    bob = race.session("bob")
    other = race.begin(bob)
    blocked = Step(lambda: race.execute(bob, other, "update", {"n": 99}, {"id": 1}))
    blocked.start()
    race.wait_blocked(race.pid(bob))
    admin.commit()
    assert blocked.outcome()["data"][0]["v"] == "row 1"
    race.call(bob, "tx_rollback", other)
    assert race.rows()[0] == ROW_1
    assert race.status(failed) == "rolled_back"
    race.assert_settled()


def test_forced_retry_names_the_holder_on_a_partitioned_composite_key(race: Race) -> None:
    race.admin.execute(
        """
        create table public.pk2 (a integer, "b c" text collate "C", v text, primary key (a, "b c"))
            partition by list (a);
        create table public.pk2_1 partition of public.pk2 for values in (1);
        create table public.pk2_2 partition of public.pk2 for values in (2);
        insert into public.pk2 values (1, 'x', 'one'), (2, 'y', 'two');
        select resilience.manage_table('public.pk2');
        grant select, insert, update, delete on public.pk2 to race_user;
        """
    )
    alice, bob = race.session(), race.session("bob")
    failed = race.begin(alice)
    race.call(alice, "tx_execute", failed, "pk2", "update", {"v": "alice"}, {"a": 2, "b c": "y"})
    race.admin.execute("set session_replication_role = replica")
    race.admin.execute("update public.pk2 set v = 'bypass' where a = 2")
    race.admin.execute("reset session_replication_role")
    race.expire(failed)
    race.admin.execute("select resilience.tx_reap()")
    assert race.status(failed) == "failed"
    other = race.begin(bob)
    race.call(bob, "tx_execute", other, "pk2", "update", {"v": "bob"}, {"a": 2, "b c": "y"})
    try:
        race.admin.execute("select resilience.tx_rollback(%s, force => true)", (failed,))
    except psycopg.errors.LockNotAvailable as error:
        assert str(other) in str(error)
    else:
        raise AssertionError("the forced retry overwrote bob's claimed row")
    race.call(bob, "tx_commit", other)
    rows = race.admin.execute("select p::text from public.pk2 as p order by a").fetchall()
    assert rows == [("(1,x,one)",), ("(2,y,bob)",)]
    race.assert_settled()
