"""Processes hammer one table with begin/execute/commit/rollback loops,
abandoned transactions that expire, plain writes and a janitor, then the
state is checked against what the workers did (DESIGN.md 1):

* nothing unexpected was raised (no deadlock, no error but a claim, an
  expiry or an existing key), and nothing failed to roll back;
* no claim, claimed table or image outlives its transaction;
* every counter row is explained exactly by the writers that committed:
  each committed write appears once in its row's history, no rolled-back,
  timed-out or refused write does, and its count matches;
* the moving keys are what replaying the committed transactions in commit
  order gives (inserts, deletes, key changes).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections import Counter, defaultdict
from typing import Any

import breakit8_race.hammer as hammer

from .conftest import Race

SECONDS = 5.0


def test_hammer_invariants(race: Race) -> None:
    race.admin.execute(
        "insert into public.acct (id, v, n) select g, 'row ' || g, g * 10"
        " from generate_series(6, 12) as g"
    )
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=5, mp_context=spawn) as pool:
        logical = [
            pool.submit(hammer.logical_worker, race.user_dsn, sub, seed, SECONDS)
            for seed, sub in enumerate(["alice", "bob", "carol"])
        ]
        plain = pool.submit(hammer.plain_worker, race.user_dsn, "dave", 7, SECONDS)
        janitor = pool.submit(hammer.janitor_worker, race.dsn, "janitor", 0, SECONDS)
        results = [f.result(timeout=120) for f in logical]
        plain_result = plain.result(timeout=120)
        janitor_result = janitor.result(timeout=120)

    unexpected = [u for r in [*results, plain_result, janitor_result] for u in r["unexpected"]]
    assert unexpected == []

    # Everything still open ends now, as a reap at expiry would end it.
    race.admin.execute(
        "update resilience.transactions set started_at = least(started_at, clock_timestamp()"
        " - interval '2 seconds'), expires_at = clock_timestamp() - interval '1 second'"
        " where status = 'active'"
    )
    race.admin.execute("select resilience.tx_reap(10000)")
    statuses: dict[str, str] = dict(
        race.admin.execute("select id::text, status from resilience.transactions").fetchall()
    )
    assert Counter(statuses.values())["active"] == 0
    assert Counter(statuses.values())["failed"] == 0
    race.assert_settled()

    transactions = [t for r in results for t in r["transactions"]]
    assert len(transactions) > 20  # the run did something
    committed = {t["tx"] for t in transactions if statuses[t["tx"]] == "committed"}
    assert {t["tx"] for t in transactions if t["ending"] == "commit"} >= committed

    # Counters: the tokens in each row are exactly its committed writers.
    expected: dict[int, list[str]] = defaultdict(list)
    for t in transactions:
        if t["tx"] in committed:
            for op, key, _ in t["ops"]:
                if op == "update":
                    expected[key].append(t["tx"][:13])
    for token, key in plain_result["committed"]:
        expected[key].append(token)
    rows = race.admin.execute(
        "select id, n, hist from public.acct where id between 1 and 12 order by id"
    ).fetchall()
    for key, n, hist in rows:
        assert sorted(hist.split()) == sorted(expected[key]), key
        assert n == key * 10 + len(expected[key]), key

    # Moving keys: claims serialize the transactions that touch a key (a
    # move claims both), so replaying the committed ones in commit order
    # (finished_at) gives the final rows.
    finished: dict[str, Any] = dict(
        race.admin.execute("select id::text, finished_at from resilience.transactions")
    )
    replayed: dict[int, str] = {}
    for t in sorted(
        (t for t in transactions if t["tx"] in committed), key=lambda t: finished[t["tx"]]
    ):
        for op, key, new in t["ops"]:
            if op == "insert":
                replayed[key] = t["tx"][:13]
            elif op == "delete":
                del replayed[key]
            elif op == "move":
                replayed[new] = replayed.pop(key)
    present = dict(
        race.admin.execute("select id, hist from public.acct where id >= 100").fetchall()
    )
    assert present == replayed
