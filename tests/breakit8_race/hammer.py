"""Worker processes for test_hammer: each loops begin/execute/finish (or
plain writes) on one table until its deadline and reports what it did.

Rows 1..12 are counters: a writer appends its token to `hist` and adds one
to `n` (a logical transaction after `lock` read the row: no lost update).
Keys 100..105 are inserted, deleted and moved to another key (a key
change) by logical transactions only.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

COUNTERS = range(1, 13)
MOVING = range(100, 106)
# What a worker may meet and go on after: a claim (55P03), its own
# transaction expired meanwhile (RZ003) or reaped (RZ002), a key that exists.
EXPECTED = {"55P03", "RZ003", "RZ002", "23505"}


def _connect(dsn: str, sub: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(dsn, autocommit=True)
    connection.execute(
        "select set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": sub}),)
    )
    connection.execute("set statement_timeout = '20s'")
    return connection


def _call(connection: psycopg.Connection[Any], function: str, *args: Any) -> Any:
    values = [Jsonb(a) if isinstance(a, dict) else a for a in args]
    marks = ", ".join(["%s"] * len(values))
    row = connection.execute(f"select resilience.{function}({marks})", values).fetchone()
    assert row is not None
    return row[0]


def logical_worker(dsn: str, sub: str, seed: int, seconds: float) -> dict[str, Any]:
    """Transactions of `sub`: per transaction, its id, the intended ending,
    and the operations that succeeded [(op, key, new key)]."""
    rng = random.Random(seed)
    done: list[dict[str, Any]] = []
    unexpected: list[str] = []
    deadline = time.monotonic() + seconds
    with _connect(dsn, sub) as conn:
        while time.monotonic() < deadline:
            ending = rng.choices(["commit", "rollback", "abandon"], [45, 35, 20])[0]
            timeout_ms = rng.choice([300, 700]) if ending == "abandon" else 10000
            try:
                tx = _call(conn, "tx_begin", timeout_ms)
            except psycopg.Error as error:
                unexpected.append(f"tx_begin: {error.sqlstate} {error}")
                continue
            token = str(tx)[:13]
            ops: list[tuple[str, int, int]] = []
            for _ in range(rng.randint(1, 3)):
                try:
                    if rng.random() < 0.7:
                        key = rng.choice(COUNTERS)
                        locked = _call(conn, "tx_execute", tx, "acct", "lock", None, {"id": key})
                        row = locked["data"][0]
                        _call(
                            conn,
                            "tx_execute",
                            tx,
                            "acct",
                            "update",
                            {"n": row["n"] + 1, "hist": f"{row['hist']} {token}"},
                            {"id": key},
                        )
                        ops.append(("update", key, key))
                    elif rng.random() < 0.4:
                        key = rng.choice(MOVING)
                        data = {"id": key, "v": "moving", "hist": token}
                        _call(conn, "tx_execute", tx, "acct", "insert", data)
                        ops.append(("insert", key, key))
                    elif rng.random() < 0.5:
                        key, new = rng.sample(MOVING, 2)
                        # A key change claims both keys.
                        moved = _call(
                            conn, "tx_execute", tx, "acct", "update", {"id": new}, {"id": key}
                        )
                        if moved["count"]:
                            ops.append(("move", key, new))
                    else:
                        key = rng.choice(MOVING)
                        gone = _call(conn, "tx_execute", tx, "acct", "delete", None, {"id": key})
                        if gone["count"]:
                            ops.append(("delete", key, key))
                except psycopg.Error as error:
                    if error.sqlstate not in EXPECTED:
                        unexpected.append(f"execute: {error.sqlstate} {error}")
            try:
                if ending == "commit":
                    _call(conn, "tx_commit", tx)
                elif ending == "rollback":
                    _call(conn, "tx_rollback", tx)
                else:
                    time.sleep(rng.random() * 0.05)
            except psycopg.Error as error:
                if error.sqlstate not in EXPECTED:
                    unexpected.append(f"{ending}: {error.sqlstate} {error}")
            done.append({"tx": str(tx), "ending": ending, "ops": ops})
    return {"transactions": done, "unexpected": unexpected}


def plain_worker(dsn: str, sub: str, seed: int, seconds: float) -> dict[str, Any]:
    """Plain writes (autocommit) on the counters: the tokens that committed."""
    rng = random.Random(seed)
    committed: list[tuple[str, int]] = []
    unexpected: list[str] = []
    deadline = time.monotonic() + seconds
    count = 0
    with _connect(dsn, sub) as conn:
        while time.monotonic() < deadline:
            count += 1
            key = rng.choice(COUNTERS)
            token = f"p{seed}-{count}"
            try:
                conn.execute(
                    "update public.acct set n = n + 1, hist = hist || ' ' || %s where id = %s",
                    (token, key),
                )
                committed.append((token, key))
            except psycopg.Error as error:
                if error.sqlstate != "55P03":
                    unexpected.append(f"plain: {error.sqlstate} {error}")
            time.sleep(0.005)
    return {"committed": committed, "unexpected": unexpected}


def janitor_worker(dsn: str, sub: str, seed: int, seconds: float) -> dict[str, Any]:
    """An explicit tx_reap now and then (pg_cron, Janitor)."""
    unexpected: list[str] = []
    deadline = time.monotonic() + seconds
    reaped = 0
    with _connect(dsn, sub) as conn:
        while time.monotonic() < deadline:
            try:
                reaped += _call(conn, "tx_reap")
            except psycopg.Error as error:
                unexpected.append(f"tx_reap: {error.sqlstate} {error}")
            time.sleep(0.2)
    return {"reaped": reaped, "unexpected": unexpected}
