"""Bank transfers: logical transactions vs single real transactions, side by
side in one run.

A logical transfer is what an RPC client does with pgresilience: tx_begin;
read the source balance and compare-and-set it (tx_execute update with the
read balance in `match`); the same for the target; a row in the transfers log
(tx_execute insert); tx_commit. Seven round trips, each its own database
transaction. A claimed row (55P03) or a stale balance rolls the transfer back
and it is retried; retries count in the time.

The baseline is the same transfer as ONE real database transaction:
`update ... balance - x`, `update ... balance + x` (in account order, so
that concurrent transfers cannot deadlock), the log insert, commit.

Both run on the same managed tables with the same clients; throughput in
transfers per second, and the ratio logical / real.

Uses an embedded PostgreSQL, or the server of $PGRESILIENCE_BENCH_DSN
(superuser; a scratch database is created and dropped).

    python bench/bank.py [--quick] [--clients N] [--accounts N]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from _support import scratch_database, server

DATABASE = "pgresilience_bench_bank"
START_BALANCE = 1_000_000

SCHEMA = """
create table public.accounts (id integer primary key, balance bigint not null);
create table public.transfers (
    id bigint generated always as identity primary key,
    tx_id uuid,
    from_account integer not null,
    to_account integer not null,
    amount bigint not null check (amount > 0)
);
insert into public.accounts select g, {start} from generate_series(1, {accounts}) as g;
select resilience.manage_table('public.accounts');
select resilience.manage_table('public.transfers');
"""


@contextlib.contextmanager
def bank_database(admin_dsn: str, accounts: int) -> Iterator[str]:
    with scratch_database(admin_dsn, DATABASE) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(SCHEMA).format(
                    start=sql.Literal(START_BALANCE), accounts=sql.Literal(accounts)
                )
            )
        yield dsn


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries = 0

    def retry(self) -> None:
        with self.lock:
            self.retries += 1


def call(conn: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    statement = sql.SQL("select resilience.{}({})").format(
        sql.Identifier(function), sql.SQL(", ").join(sql.Placeholder() * len(args))
    )
    values = [Jsonb(a) if isinstance(a, dict) else a for a in args]
    row = conn.execute(statement, values).fetchone()
    assert row is not None
    return row[0]


class Stale(Exception):
    pass


def compare_and_set(conn: psycopg.Connection[Any], tx_id: Any, account: int, delta: int) -> None:
    row = conn.execute("select balance from public.accounts where id = %s", (account,)).fetchone()
    assert row is not None
    result = call(
        conn,
        "tx_execute",
        tx_id,
        "public.accounts",
        "update",
        {"balance": row[0] + delta},
        {"id": account, "balance": row[0]},
    )
    if result["count"] != 1:
        raise Stale


def logical_transfer(conn: psycopg.Connection[Any], a: int, b: int, amount: int) -> bool:
    """One transfer as a logical transaction; False if it must be retried."""
    tx_id = call(conn, "tx_begin", 30_000, None)
    try:
        compare_and_set(conn, tx_id, a, -amount)
        compare_and_set(conn, tx_id, b, amount)
        log = {"tx_id": str(tx_id), "from_account": a, "to_account": b, "amount": amount}
        call(conn, "tx_execute", tx_id, "public.transfers", "insert", log, None)
        call(conn, "tx_commit", tx_id)
        return True
    except (Stale, psycopg.errors.LockNotAvailable):
        call(conn, "tx_rollback", tx_id, "retry", False)
        return False


def real_transfer(conn: psycopg.Connection[Any], a: int, b: int, amount: int) -> bool:
    """The same transfer as one real database transaction."""
    with conn.transaction():
        for account, delta in sorted([(a, -amount), (b, amount)]):
            conn.execute(
                "update public.accounts set balance = balance + %s where id = %s",
                (delta, account),
            )
        conn.execute(
            "insert into public.transfers (from_account, to_account, amount) values (%s, %s, %s)",
            (a, b, amount),
        )
    return True


def measure(
    dsn: str,
    transfer: Callable[[psycopg.Connection[Any], int, int, int], bool],
    clients: int,
    per_client: int,
    accounts: int,
    seed: int,
) -> tuple[float, int]:
    """(transfers per second, retries) for ``clients`` threads."""
    counters = Counters()
    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        conn = connections[number]
        barrier.wait()
        for _ in range(per_client):
            while True:
                a, b = rng.sample(range(1, accounts + 1), 2)
                if transfer(conn, a, b, rng.randint(1, 100)):
                    break
                counters.retry()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for conn in connections:
        conn.close()
    return clients * per_client / elapsed, counters.retries


def breakdown(dsn: str, transfers: int, accounts: int) -> dict[str, float]:
    """Mean milliseconds per step of a logical transfer, one client, no contention."""
    steps: dict[str, list[float]] = {}
    rng = random.Random(7)

    @contextlib.contextmanager
    def timed(step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        steps.setdefault(step, []).append((time.perf_counter() - start) * 1000)

    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(transfers):
            a, b = rng.sample(range(1, accounts + 1), 2)
            with timed("tx_begin"):
                tx_id = call(conn, "tx_begin", 30_000, None)
            for account, delta in ((a, -1), (b, 1)):
                with timed("select balance"):
                    row = conn.execute(
                        "select balance from public.accounts where id = %s", (account,)
                    ).fetchone()
                assert row is not None
                new, seen = {"balance": row[0] + delta}, {"id": account, "balance": row[0]}
                with timed("tx_execute update"):
                    call(conn, "tx_execute", tx_id, "public.accounts", "update", new, seen)
            log = {"tx_id": str(tx_id), "from_account": a, "to_account": b, "amount": 1}
            with timed("tx_execute insert"):
                call(conn, "tx_execute", tx_id, "public.transfers", "insert", log, None)
            with timed("tx_commit"):
                call(conn, "tx_commit", tx_id)
            with timed("real transfer"):
                real_transfer(conn, a, b, 1)
    return {step: statistics.mean(values) for step, values in steps.items()}


def check_books(dsn: str, accounts: int) -> None:
    with psycopg.connect(dsn) as conn:
        total = conn.execute("select sum(balance) from public.accounts").fetchone()
        assert total == (accounts * START_BALANCE,), "the books do not balance"
        claims = conn.execute("select count(*) from resilience._claims()").fetchone()
        assert claims == (0,), "claims left behind"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=1000)
    args = parser.parse_args()
    per_client, rounds = (50, 1) if args.quick else (300, 3)

    with server() as admin_dsn, bank_database(admin_dsn, args.accounts) as dsn:
        modes = {"logical": logical_transfer, "real": real_transfer}
        results: dict[str, dict[int, list[tuple[float, int]]]] = {m: {} for m in modes}
        for clients in sorted({1, args.clients}):
            for round_no in range(rounds):
                # Alternate the two modes, so that both see the same server state.
                for mode, transfer in modes.items():
                    results[mode].setdefault(clients, []).append(
                        measure(dsn, transfer, clients, per_client, args.accounts, round_no)
                    )
        steps = breakdown(dsn, per_client, args.accounts)
        check_books(dsn, args.accounts)

    print(
        f"bank transfers: {args.accounts} accounts, {per_client} transfers per client, "
        f"median of {rounds} round(s)"
    )
    print(f"{'clients':>7}  {'logical tx/s':>12}  {'real tx/s':>10}  {'ratio':>6}  retries")
    for clients in sorted(results["logical"]):
        logical = statistics.median(r[0] for r in results["logical"][clients])
        real = statistics.median(r[0] for r in results["real"][clients])
        retries = sum(r[1] for r in results["logical"][clients])
        print(f"{clients:>7}  {logical:>12.0f}  {real:>10.0f}  {logical / real:>6.2f}  {retries}")
    print("ratio = logical transactions per second / single real transactions per second")
    print("\none logical transfer, step by step (1 client, mean ms per call):")
    for step, ms in steps.items():
        print(f"  {step:<18} {ms:6.2f}")


if __name__ == "__main__":
    main()
