"""Through a transaction pooler (PgBouncer 1.18, transaction mode, two server
connections per user and database): the README's "Which URL for what" —
the transaction managers work on it, PostgREST-style requests keep their
identity and header to themselves, and the LISTEN-based features notice the
pooler and poll."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgresilience import (
    AsyncTransactionManager,
    ClaimConflict,
    SchemaVersionManager,
    TransactionManager,
    installer,
    status,
)
from pgresilience.breakers import CircuitBreaker
from pgresilience.breakers.shared import SharedCircuitStore

from .conftest import running_pooler
from .supa import ALICE, BOB, Rest, table_rows

LEDGER = """
create table ledger (id int primary key, worker int not null, n int not null);
insert into ledger values (0, -1, 0);
select resilience.manage_table('ledger');
"""


def test_transaction_managers_of_many_threads_share_the_pooler(
    project: str, owner_dsn: str, pooler: Any
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    expected = {"(0,-1,0)"}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(w: int, tm: TransactionManager) -> None:
        try:
            for i in range(8):
                key = w * 100 + i
                try:
                    with tm.transaction(timeout=30.0, label=f"w{w}") as tx:
                        tx.insert("ledger", {"id": key, "worker": w, "n": i})
                        tx.update("ledger", {"n": i + 1}, match={"id": key})
                        if i % 3 == 0:  # the shared row: claims meet, nobody waits
                            tx.update("ledger", {"n": key}, match={"id": 0})
                        if i % 2:
                            raise KeyError("roll back")
                except KeyError:
                    continue
                except ClaimConflict:
                    continue
                with lock:
                    expected.add(f"({key},{w},{i + 1})")
                    if i % 3 == 0:
                        expected.discard(next(r for r in expected if r.startswith("(0,")))
                        expected.add(f"(0,-1,{key})")
            tx_id = tm.begin(timeout=30.0)  # one call at a time, then rolled back
            tm.execute(tx_id, "ledger", "insert", {"id": w * 100 + 99, "worker": w, "n": 0})
            tm.rollback(tx_id)
            batch = tm.run(
                [
                    {
                        "table": "ledger",
                        "operation": "insert",
                        "data": {"id": w * 100 + 50, "worker": w, "n": 50},
                    }
                ]
            )
            assert batch.success, batch.error
            with lock:
                expected.add(f"({w * 100 + 50},{w},50)")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with TransactionManager(pooler.dsn(owner_dsn), pool_size=4) as tm:
        threads = [threading.Thread(target=worker, args=(w, tm)) for w in range(1, 7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert tm.active_transactions() == []
    assert set(table_rows(project, "ledger")) == expected


def test_postgrest_requests_through_the_pooler_keep_identity_and_header_apart(
    project: str, pooler: Any
) -> None:
    """Four PostgREST-like clients on two server connections: Alice's header
    and identity never reach Bob's plain writes that share her backend."""
    before = table_rows(project)
    url = pooler.dsn(project, user="authenticator")
    # PostgREST behind a transaction pooler runs with db-prepared-statements = false.
    conns = [psycopg.connect(url, autocommit=True, prepare_threshold=None) for _ in range(4)]
    try:
        starter = Rest(conns[0], sub=ALICE)
        txs = [starter.rpc("tx_begin") for _ in range(2)]
        errors: list[BaseException] = []

        def alice(conn: psycopg.Connection[Any], tx: Any) -> None:
            try:
                writer = Rest(conn, sub=ALICE, headers={"x-resilience-tx": str(tx)})
                for i in range(15):
                    writer.request("insert into todos (title) values (%s)", (f"a{i}",))
            except BaseException as error:
                errors.append(error)

        def bob(conn: psycopg.Connection[Any]) -> None:
            try:
                writer = Rest(conn, sub=BOB)
                for i in range(15):
                    writer.request("insert into todos (title) values (%s)", (f"b{i}",))
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=alice, args=(conns[0], txs[0])),
            threading.Thread(target=alice, args=(conns[1], txs[1])),
            threading.Thread(target=bob, args=(conns[2],)),
            threading.Thread(target=bob, args=(conns[3],)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for tx in txs:
            assert starter.rpc("tx_status", tx_id=tx)["rows"] == 15
            assert starter.rpc("tx_rollback", tx_id=tx)["restored_rows"] == 15
    finally:
        for conn in conns:
            conn.close()
    after = table_rows(project)
    added = [row for row in after if row not in before]
    assert len(added) == 30 and all(BOB in row for row in added)


def test_schema_watcher_behind_the_pooler_polls_and_still_sees_each_version(
    owner_dsn: str, pooler: Any
) -> None:
    seen: list[int] = []
    arrived = threading.Event()
    with SchemaVersionManager(pooler.dsn(owner_dsn), poll_interval=0.2) as svm:
        first = svm.initialize().version

        def on_change(changes: Any) -> None:
            seen.append(changes.version)
            arrived.set()

        svm.on_schema_change(on_change)
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            owner.execute("create table notes (id int primary key)")
            owner.execute("select resilience.schema_refresh()")  # no event triggers here
        assert arrived.wait(20)
        assert svm.mode == "poll"
    assert seen and seen[-1] > first


@pytest.mark.timeout(120)
def test_shared_circuits_behind_the_pooler_learn_each_others_transitions(
    owner_dsn: str, pooler: Any
) -> None:
    url = pooler.dsn(owner_dsn)
    one = SharedCircuitStore(url, refresh_interval=0.2)
    two = SharedCircuitStore(url, refresh_interval=0.2)
    try:
        mine = one.attach(CircuitBreaker("ai-api", failure_threshold=2, timeout=60.0))
        theirs = two.attach(CircuitBreaker("ai-api", failure_threshold=2, timeout=60.0))
        assert one.wait_connected(10) and two.wait_connected(10)
        mine.force_open()
        deadline = time.monotonic() + 20
        while theirs.state != mine.state and time.monotonic() < deadline:
            time.sleep(0.05)
        assert theirs.state.value == mine.state.value == "forced_open"
        assert (one.mode, two.mode) == ("poll", "poll")
    finally:
        one.close()
        two.close()


def test_async_manager_of_many_tasks_through_the_pooler(
    project: str, owner_dsn: str, pooler: Any
) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(LEDGER)
    before = set(table_rows(project, "ledger"))

    async def main() -> set[str]:
        committed: set[str] = set()
        async with AsyncTransactionManager(pooler.dsn(owner_dsn), pool_size=3) as tm:

            async def task(k: int) -> None:
                try:
                    async with tm.transaction(label=f"t{k}") as tx:
                        await tx.insert("ledger", {"id": 1000 + k, "worker": k, "n": 0})
                        await tx.update("ledger", {"n": k}, match={"id": 1000 + k})
                        if k % 2:
                            raise KeyError("roll back")
                    committed.add(f"({1000 + k},{k},{k})")
                except KeyError:
                    pass

            await asyncio.gather(*(task(k) for k in range(20)))
            assert await tm.active_transactions() == []
        return committed

    committed = asyncio.run(main())
    assert set(table_rows(project, "ledger")) == before | committed


def test_install_status_and_uninstall_run_through_the_pooler(
    server: Any, owner_role: str, pooler: Any
) -> None:
    """README: `install`, `uninstall`, `status` take any URL, the transaction
    pooler's included (as the project's non-superuser owner)."""
    name = f"pgr_supa_{uuid.uuid4().hex[:12]}"
    server.create_database(name, owner=owner_role)
    try:
        url = pooler.dsn(server.dsn(name, user=owner_role))
        installer.install(url, plpython=False, event_triggers=False)
        # (the command connects so: autocommit, nothing prepared server-side)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            for _ in range(3):
                assert any("[to do]" in line for line in status.status_lines(conn))
        assert any("removed schema resilience" in line for line in installer.uninstall(url))
    finally:
        server.drop_database(name)


@pytest.mark.xfail(
    strict=True,
    reason="the watcher tells a pooler by its port only (the port connected to is not the "
    "server's): a transaction pooler on another host but the server's own port is taken for "
    "the server, LISTEN there delivers nothing, and changes are missed while it stays "
    "connected; pass poll=True or listen_conninfo= (README, 'Which URL for what')",
)
def test_schema_watcher_notices_a_pooler_on_the_servers_own_port(
    server: Any, owner_dsn: str
) -> None:
    port = int(conninfo_to_dict(owner_dsn)["port"])
    # The server listens on 127.0.0.1 only: the pooler takes the same port on 127.0.0.2.
    with running_pooler(server, port, "127.0.0.2") as same_port:
        arrived = threading.Event()
        with SchemaVersionManager(same_port.dsn(owner_dsn), poll_interval=0.2) as svm:
            svm.initialize()
            svm.on_schema_change(lambda changes: arrived.set())
            assert svm.listening.wait(10)
            with psycopg.connect(owner_dsn, autocommit=True) as owner:
                owner.execute("create table notes (id int primary key)")
                owner.execute("select resilience.schema_refresh()")
            assert arrived.wait(1.5)


def test_parallel_header_requests_racing_the_commit_are_in_or_refused(
    project: str, pooler: Any
) -> None:
    """Promise.all of header writes while another request commits: each
    write is either captured before the commit (and kept) or refused with
    RZ002; none lands uncaptured after it."""
    url = pooler.dsn(project, user="authenticator")
    conns = [psycopg.connect(url, autocommit=True, prepare_threshold=None) for _ in range(5)]
    try:
        owner = Rest(conns[0], sub=ALICE)
        tx = owner.rpc("tx_begin")
        kept: list[str] = []
        refused: list[str] = []
        started = threading.Barrier(5)

        def writer(conn: psycopg.Connection[Any], w: int) -> None:
            client = Rest(conn, sub=ALICE, headers={"x-resilience-tx": str(tx)})
            started.wait()
            for i in range(30):
                title = f"w{w}-{i}"
                try:
                    client.request("insert into todos (title) values (%s)", (title,))
                    kept.append(title)
                except psycopg.Error as error:
                    assert error.sqlstate == "RZ002", error
                    refused.append(title)

        threads = [threading.Thread(target=writer, args=(conns[w], w)) for w in range(1, 5)]
        for thread in threads:
            thread.start()
        started.wait()
        deadline = time.monotonic() + 20
        while len(kept) < 10 and time.monotonic() < deadline:  # mid-stream
            time.sleep(0.005)
        assert owner.rpc("tx_commit", tx_id=tx)["status"] == "committed"
        for thread in threads:
            thread.join()
        assert len(kept) + len(refused) == 120
        assert owner.rpc("tx_status", tx_id=tx)["rows"] == len(kept)
        titles = owner.request("select title from todos")
        assert sorted(t for (t,) in titles) == sorted(kept)
    finally:
        for conn in conns:
            conn.close()


def test_shared_circuits_behind_a_pooler_refusing_startup_options_say_why_and_work_locally(
    server: Any, owner_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """README: the store's server-side timeouts need `ignore_startup_parameters
    = options` at the pooler. Without it the store never connects: it logs
    the pooler's refusal (it used to log nothing), and the breakers decide
    locally."""
    with running_pooler(server, ignore="extra_float_digits") as strict:
        store = SharedCircuitStore(strict.dsn(owner_dsn), retry_interval=0.2)
        try:
            with caplog.at_level("WARNING", logger="pgresilience.breakers.shared"):
                breaker = store.attach(CircuitBreaker("ai-api", failure_threshold=2))
                assert not store.wait_connected(1.5)
                assert breaker.execute(lambda: "answer") == "answer"
        finally:
            store.close()
    refusals = [r for r in caplog.records if "unsupported startup parameter" in r.getMessage()]
    assert len(refusals) == 1  # once, not at every retry
