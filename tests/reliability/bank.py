"""The bank workload: concurrent clients moving money between accounts with
logical transactions, and the invariants that must hold afterwards.

A transfer is one logical transaction made of separate calls, each its own
database transaction: tx_begin; the debit (one tx_execute); the credit
(another tx_execute); a row in `transfers` (a third tx_execute, so that the
log commits or rolls back with the money); then tx_commit or tx_rollback, or
nothing at all (abandoned: the reaper times it out).

tx_execute writes absolute values, so a client reads each balance under
`lock` (the logical SELECT ... FOR UPDATE: the row is claimed from the read
on) and writes the new value in a later call. A row another logical
transaction has claimed fails at once with 55P03; the client rolls its
transaction back and tries another transfer. Nobody waits, so no deadlock.
The write still carries the balance it read in `match`: under lock it must
always match, and a miss is counted as a stale read (the test wants none).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

ACCOUNTS = 40
START_BALANCE = 1_000
TELLER = "pgr_bank_teller"

SCHEMA = """
create table public.accounts (
    id integer primary key,
    balance bigint not null
);
create table public.transfers (
    id bigint generated always as identity primary key,
    tx_id uuid not null unique,
    from_account integer not null references public.accounts (id),
    to_account integer not null references public.accounts (id),
    amount bigint not null check (amount > 0)
);
insert into public.accounts (id, balance)
    select g, {start} from generate_series(1, {accounts}) as g;
select resilience.manage_table('public.accounts');
select resilience.manage_table('public.transfers');
grant select, update on public.accounts to {teller};
grant select, insert on public.transfers to {teller};
"""


def create_bank(admin: psycopg.Connection[Any]) -> None:
    """Accounts, the transfers log, both managed; the teller role may use them."""
    admin.execute(
        sql.SQL(SCHEMA).format(
            start=sql.Literal(START_BALANCE),
            accounts=sql.Literal(ACCOUNTS),
            teller=sql.Identifier(TELLER),
        )
    )


def create_teller(admin: psycopg.Connection[Any]) -> None:
    """The login role the clients use: a plain API user, not a superuser."""
    exists = admin.execute("select 1 from pg_roles where rolname = %s", (TELLER,)).fetchone()
    if not exists:
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(TELLER)))
    admin.execute(sql.SQL("grant resilience_user to {}").format(sql.Identifier(TELLER)))


# Expired (RZ003), or already finished by the reaper (RZ002).
EXPIRED = ("RZ002", "RZ003")


class Retry(Exception):
    """The transfer met a claimed row or a stale balance: roll back, try another."""


@dataclass
class Outcomes:
    """What the clients know happened, by logical transaction id."""

    committed: set[str] = field(default_factory=set)
    rolled_back: set[str] = field(default_factory=set)
    abandoned: set[str] = field(default_factory=set)
    # Finished by the server behind the client's back (expired), or lost
    # with the connection (crash): the database says what became of them.
    unknown: set[str] = field(default_factory=set)
    claim_conflicts: int = 0
    stale_reads: int = 0
    gave_up: int = 0
    reconnects: int = 0
    transfers_done: int = 0  # planned transfers finished, whatever their outcome
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, tx_id: str) -> None:
        with self.lock:
            getattr(self, kind).add(tx_id)

    def count(self, counter: str) -> None:
        with self.lock:
            setattr(self, counter, getattr(self, counter) + 1)


@dataclass
class Plan:
    clients: int = 8
    transfers: int = 200  # per client
    abandoned: int = 2  # per client, left to time out
    rollback_share: float = 1 / 3
    timeout_ms: int = 30_000
    abandon_timeout_ms: int = 200
    max_attempts: int = 1_000
    # Threads may raise this to stop early (tests use it on failure).
    stop: threading.Event = field(default_factory=threading.Event)

    def intents(self, rng: random.Random) -> list[str]:
        rollbacks = round(self.transfers * self.rollback_share)
        commits = self.transfers - rollbacks - self.abandoned
        intents = ["commit"] * commits + ["rollback"] * rollbacks + ["abandon"] * self.abandoned
        rng.shuffle(intents)
        return intents


class Teller:
    """One client: its own connection, autocommit (every call its own database
    transaction, as over PostgREST)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], outcomes: Outcomes) -> None:
        self.connect = connect
        self.outcomes = outcomes
        self.conn = connect()

    def call(self, function: str, *args: Any) -> Any:
        placeholders = sql.SQL(", ").join(sql.Placeholder() * len(args))
        statement = sql.SQL("select resilience.{}({})").format(
            sql.Identifier(function), placeholders
        )
        values = [Jsonb(a) if isinstance(a, dict | list) else a for a in args]
        row = self.conn.execute(statement, values).fetchone()
        assert row is not None
        return row[0]

    def locked_balance(self, tx_id: str, account: int) -> int:
        """One call: claim the account and read its balance (lock)."""
        result = self.call("tx_execute", tx_id, "public.accounts", "lock", None, {"id": account})
        [row] = result["data"]
        return int(row["balance"])

    def move(self, tx_id: str, account: int, delta: int) -> None:
        """Two calls: read the balance under lock, then write the new one."""
        seen = self.locked_balance(tx_id, account)
        result = self.call(
            "tx_execute",
            tx_id,
            "public.accounts",
            "update",
            {"balance": seen + delta},
            {"id": account, "balance": seen},
        )
        if result["count"] != 1:
            self.outcomes.count("stale_reads")
            raise Retry

    def transfer(self, intent: str, rng: random.Random, plan: Plan) -> bool:
        """One attempt at a transfer; False when it has to be retried."""
        source, target = rng.sample(range(1, ACCOUNTS + 1), 2)
        amount = rng.randint(1, 50)
        timeout = plan.abandon_timeout_ms if intent == "abandon" else plan.timeout_ms
        tx_id = str(self.call("tx_begin", timeout, f"transfer {source}->{target}"))
        try:
            self.move(tx_id, source, -amount)
            self.move(tx_id, target, amount)
            self.call(
                "tx_execute",
                tx_id,
                "public.transfers",
                "insert",
                {"tx_id": tx_id, "from_account": source, "to_account": target, "amount": amount},
                None,
            )
            if intent == "commit":
                self.call("tx_commit", tx_id)
                self.outcomes.add("committed", tx_id)
            elif intent == "rollback":
                self.call("tx_rollback", tx_id, "client changed its mind", False)
                self.outcomes.add("rolled_back", tx_id)
            else:
                self.outcomes.add("abandoned", tx_id)
            return True
        except (Retry, psycopg.errors.LockNotAvailable) as exc:
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                self.outcomes.count("claim_conflicts")
            self.abort(tx_id, "conflict, retrying")
            return False
        except psycopg.Error as exc:
            if exc.sqlstate in EXPIRED:  # too slow: the reaper rolls it back
                self.outcomes.add("unknown", tx_id)
                return False
            if isinstance(exc, psycopg.OperationalError):
                self.outcomes.add("unknown", tx_id)  # the crash test
            raise

    def abort(self, tx_id: str, reason: str) -> None:
        try:
            self.call("tx_rollback", tx_id, reason, False)
            self.outcomes.add("rolled_back", tx_id)
        except psycopg.Error as exc:
            if exc.sqlstate not in EXPIRED:
                raise
            self.outcomes.add("unknown", tx_id)

    def work(self, seed: int, plan: Plan) -> None:
        rng = random.Random(seed)
        for intent in plan.intents(rng):
            for attempt in range(plan.max_attempts):
                if plan.stop.is_set():
                    return
                try:
                    if self.transfer(intent, rng, plan):
                        self.outcomes.count("transfers_done")
                        break
                except psycopg.OperationalError:
                    self.reconnect(plan)
                # Back off a little more each time: a row claimed by a
                # transaction the crash cut off stays claimed until it expires.
                time.sleep(rng.uniform(0, min(0.001 * (attempt + 1), 0.05)))
            else:
                self.outcomes.count("gave_up")

    def reconnect(self, plan: Plan) -> None:
        """The server went away (crash test): wait for it to come back."""
        self.outcomes.count("reconnects")
        try:
            self.conn.close()
        except psycopg.Error:
            pass
        deadline = time.monotonic() + 120
        while not plan.stop.is_set():
            try:
                self.conn = self.connect()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def run_workload(
    connect: Callable[[], psycopg.Connection[Any]],
    plan: Plan,
    *,
    during: Callable[[Outcomes], None] | None = None,
    seed: int = 20261129,
) -> Outcomes:
    """Run plan.clients tellers in threads; `during(outcomes)` runs meanwhile
    in the calling thread (the crash test stops the server from there)."""
    outcomes = Outcomes()
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            Teller(connect, outcomes).work(seed + number, plan)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            plan.stop.set()

    threads = [
        threading.Thread(target=client, args=(n,), name=f"teller-{n}") for n in range(plan.clients)
    ]
    for thread in threads:
        thread.start()
    try:
        if during is not None:
            during(outcomes)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return outcomes


def reap_everything(admin: psycopg.Connection[Any], plan: Plan) -> None:
    """Wait until every unfinished transaction has expired, then reap them all."""
    deadline = time.monotonic() + plan.timeout_ms / 1000 + 30
    while True:
        admin.execute("select resilience.tx_reap(1000)")
        left = admin.execute(
            "select count(*) from resilience.transactions where status = 'active'"
        ).fetchone()
        if left == (0,):
            return
        assert time.monotonic() < deadline, f"{left} transactions still active"
        time.sleep(0.1)


def check_invariants(admin: psycopg.Connection[Any], outcomes: Outcomes) -> dict[str, int]:
    """Everything a bank must guarantee after the dust settles. Returns counts."""
    total = admin.execute("select sum(balance) from public.accounts").fetchone()
    assert total == (ACCOUNTS * START_BALANCE,), "money was created or destroyed"

    status = dict(admin.execute("select id::text, status from resilience.transactions").fetchall())
    logged = {r[0] for r in admin.execute("select tx_id::text from public.transfers")}
    committed_in_db = {tx for tx, s in status.items() if s == "committed"}

    # A rollback or reap that found a row changed behind the claims marks
    # the transaction failed and restores nothing: claims must prevent that.
    failed = sorted(tx for tx, s in status.items() if s == "failed")
    assert failed == [], "rows changed behind the claims of these transactions"

    # The log holds exactly the committed logical transactions: every
    # committed transfer is there (each wrote its row before committing), no
    # rolled-back, timed-out or abandoned one is.
    assert logged == committed_in_db
    assert outcomes.committed <= logged, "a transfer the client saw committed is missing"
    assert not (outcomes.rolled_back | outcomes.abandoned) & logged
    for tx in outcomes.committed:
        assert status[tx] == "committed"
    for tx in outcomes.rolled_back:
        assert status[tx] == "rolled_back"
    for tx in outcomes.abandoned:
        assert status[tx] == "timed_out"
    assert "active" not in status.values()

    # Each balance is its start plus what the log says came in and went out.
    mismatched = admin.execute(
        """
        select a.id from public.accounts as a
        where a.balance <> %s
            + coalesce((select sum(amount) from public.transfers where to_account = a.id), 0)
            - coalesce((select sum(amount) from public.transfers where from_account = a.id), 0)
        """,
        (START_BALANCE,),
    ).fetchall()
    assert mismatched == []

    assert admin.execute("select count(*) from resilience._claims()").fetchone() == (0,)
    return {
        "committed": len(committed_in_db),
        "transfers": len(logged),
        "rolled_back": sum(1 for s in status.values() if s == "rolled_back"),
        "timed_out": sum(1 for s in status.values() if s == "timed_out"),
    }
