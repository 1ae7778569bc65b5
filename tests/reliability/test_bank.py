"""Bank transfers with logical transactions: 8 concurrent clients x 200
transfers, each moving money between two random accounts in separate calls.
A third are rolled back, a few abandoned to time out, the rest committed.
After reaping: the total balance equals the start, the transfers log holds
exactly the committed transfers, and no claim is left. Then the same with the
server killed (`pg_ctl stop -m immediate`) in the middle and restarted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgresilience import installer
from pgresilience.embedded import EmbeddedPostgres

from .bank import (
    TELLER,
    Outcomes,
    Plan,
    check_invariants,
    create_bank,
    create_teller,
    reap_everything,
    run_workload,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_concurrent_transfers_keep_the_books_balanced(
    conn: psycopg.Connection[Any], make_role: Callable[..., str]
) -> None:
    teller_dsn = make_role(TELLER, member_of=("resilience_user",))
    create_bank(conn)
    plan = Plan(clients=8, transfers=200, abandoned=2)

    outcomes = run_workload(lambda: psycopg.connect(teller_dsn, autocommit=True), plan)
    reap_everything(conn, plan)
    counts = check_invariants(conn, outcomes)

    # The workload did what it says: every planned transfer finished.
    assert outcomes.gave_up == 0
    assert outcomes.transfers_done == plan.clients * plan.transfers
    assert len(outcomes.committed) == plan.clients * (
        plan.transfers - round(plan.transfers * plan.rollback_share) - plan.abandoned
    )
    assert len(outcomes.abandoned) == plan.clients * plan.abandoned
    assert counts["timed_out"] >= len(outcomes.abandoned)
    assert outcomes.stale_reads == 0  # read under lock: never a lost update
    print(
        f"\nbank: {counts}, claim conflicts {outcomes.claim_conflicts}, "
        f"stale reads {outcomes.stale_reads}"
    )


@pytest.fixture(scope="module")
def crashable() -> Iterator[EmbeddedPostgres]:
    """A server of our own, since this test kills it."""
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("create database bank")
        installer.install(pg.dsn("bank"))
        with psycopg.connect(pg.dsn("bank"), autocommit=True) as admin:
            create_teller(admin)
            create_bank(admin)
        yield pg


@pytest.mark.timeout(300)
def test_transfers_survive_a_server_crash(crashable: EmbeddedPostgres) -> None:
    pg = crashable
    # Short timeouts: the transactions the crash cut off are reaped soon after
    # the restart instead of 30 s later.
    plan = Plan(clients=8, transfers=200, abandoned=2, timeout_ms=5_000)
    total = plan.clients * plan.transfers
    crashed = {"at": -1}

    def crash_in_the_middle(outcomes: Outcomes) -> None:
        while outcomes.transfers_done < total // 2 and not plan.stop.is_set():
            time.sleep(0.01)
        crashed["at"] = outcomes.transfers_done
        pg.crash()
        time.sleep(0.5)  # clients see the connection drop and start reconnecting
        pg.restart()

    outcomes = run_workload(
        lambda: psycopg.connect(pg.dsn("bank", user=TELLER), autocommit=True, connect_timeout=5),
        plan,
        during=crash_in_the_middle,
    )
    with psycopg.connect(pg.dsn("bank"), autocommit=True) as admin:
        reap_everything(admin, plan)
        counts = check_invariants(admin, outcomes)

    assert 0 < crashed["at"] < total
    assert outcomes.reconnects >= 1  # the clients saw the crash and came back
    assert outcomes.gave_up == 0
    print(
        f"\nbank after crash at {crashed['at']}/{total}: {counts}, "
        f"unknown outcomes {len(outcomes.unknown)}, reconnects {outcomes.reconnects}"
    )
