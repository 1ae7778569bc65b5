"""Python values an app passes in data and match: each is stored exactly as
the column's own input reads it (docs/transactions.md, "From Python"), and
a value that cannot be sent raises TypeError before any call starts."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import ipaddress
import json
import uuid
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, TransactionManager
from pgresilience.jsonvalues import dumps

TABLE = """
create table kinds (
    id uuid primary key,
    amount numeric(12, 4),
    big numeric,
    doc jsonb,
    at timestamptz,
    local_at timestamp,
    day date,
    clock time,
    span interval,
    raw bytea,
    tags text[],
    ip inet,
    net cidr,
    mood text
);
select resilience.manage_table('kinds');
"""


class Mood(enum.Enum):
    HAPPY = "happy"


KEY = uuid.UUID("0f8f2a5c-7b36-4f0e-9c49-3c1f8a9e2d11")
ROW: dict[str, Any] = {
    "id": KEY,
    "amount": decimal.Decimal("12.3400"),
    "big": decimal.Decimal("-1234567890123456789012345678901234567890.000000000000000000001"),
    "doc": {"price": decimal.Decimal("1.10"), "tiny": decimal.Decimal("1E-30")},
    "at": datetime.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=datetime.UTC),
    "local_at": datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
    "day": datetime.date(2024, 2, 29),
    "clock": datetime.time(23, 59, 58, 1),
    "span": datetime.timedelta(days=-1, seconds=5, microseconds=7),
    "raw": b"\x00\xff\x10 bytes",
    "tags": {"only"},
    "ip": ipaddress.ip_address("2001:db8::1"),
    "net": ipaddress.ip_network("10.0.0.0/8"),
    "mood": Mood.HAPPY,
}
# The same values as PostgreSQL's own literals: the oracle.
EXPECTED = """
select '0f8f2a5c-7b36-4f0e-9c49-3c1f8a9e2d11'::uuid, 12.3400::numeric(12, 4),
    -1234567890123456789012345678901234567890.000000000000000000001::numeric,
    '{"price": 1.10, "tiny": 1E-30}'::jsonb as doc,
    '2026-11-30 12:00:00.123456+00'::timestamptz, '1999-12-31 23:59:59.999999'::timestamp,
    '2024-02-29'::date, '23:59:58.000001'::time, '-1 days +00:00:05.000007'::interval,
    '\\x00ff10206279746573'::bytea, '{only}'::text[], '2001:db8::1'::inet, '10.0.0.0/8'::cidr,
    'happy'::text
"""


def stored(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "select k.*::text, (k.doc -> 'price')::text, (k.doc -> 'tiny')::text from kinds as k"
    ).fetchone()
    assert row is not None
    return tuple(row)


def expected(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        f"select e::text, (e.doc -> 'price')::text, (e.doc -> 'tiny')::text from ({EXPECTED}) as e"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def kinds(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(TABLE)
    return conn


def test_values_are_stored_exactly_and_match_by_them(kinds: psycopg.Connection[Any], dsn: str):
    with TransactionManager(dsn) as tm:
        with tm.transaction() as tx:
            tx.insert("kinds", ROW)
        assert stored(kinds) == expected(kinds)
        tx_id = tm.begin()
        locked = tm.execute(
            tx_id, "kinds", "lock", match={"id": KEY, "amount": decimal.Decimal("12.34")}
        )
        assert locked.count == 1, locked.error
        updated = tm.execute(
            tx_id,
            "kinds",
            "update",
            {"span": datetime.timedelta(microseconds=1)},
            match={"at": ROW["at"], "raw": ROW["raw"], "day": ROW["day"]},
        )
        assert updated.count == 1, updated.error
        tm.rollback(tx_id)
        assert stored(kinds) == expected(kinds)


def test_async_manager_sends_the_same(kinds: psycopg.Connection[Any], dsn: str) -> None:
    async def main() -> None:
        async with AsyncTransactionManager(dsn) as tm:
            async with tm.transaction() as tx:
                await tx.insert("kinds", ROW)

    asyncio.run(main())
    assert stored(kinds) == expected(kinds)


def test_batch_operations_send_the_same(kinds: psycopg.Connection[Any], dsn: str):
    with TransactionManager(dsn) as tm:
        result = tm.run([{"table": "kinds", "operation": "insert", "data": ROW}])
        assert result.success, result.error
    assert stored(kinds) == expected(kinds)


def test_non_finite_decimals_are_numerics(kinds: psycopg.Connection[Any], dsn: str):
    with TransactionManager(dsn) as tm:
        with tm.transaction() as tx:
            for n, value in enumerate(("NaN", "Infinity", "-Infinity")):
                tx.insert("kinds", {"id": uuid.UUID(int=n), "big": decimal.Decimal(value)})
    assert kinds.execute("select big::text from kinds order by id").fetchall() == [
        ("NaN",),
        ("Infinity",),
        ("-Infinity",),
    ]


def test_non_finite_floats_travel_as_their_text() -> None:
    """JSON has no NaN or Infinity (json.dumps would write tokens no parser
    reads): they travel as the text float and numeric columns read, nested or
    not, in sets too; finite floats stay numbers."""
    sent = dumps(
        {"x": float("nan"), "y": [float("inf"), (float("-inf"), 0.5)], "z": {float("nan")}}
    )
    assert json.loads(sent) == {"x": "NaN", "y": ["Infinity", ["-Infinity", 0.5]], "z": ["NaN"]}
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        dumps(circular)


class Opaque:
    pass


@pytest.mark.parametrize("value", [Opaque(), object(), 1 + 2j])
def test_a_value_that_cannot_be_sent_raises_before_any_call(
    kinds: psycopg.Connection[Any], dsn: str, value: Any
):
    with TransactionManager(dsn) as tm:
        tx_id = tm.begin()
        with pytest.raises(TypeError, match=type(value).__name__):
            tm.execute(tx_id, "kinds", "insert", {"id": KEY, "mood": value})
        with pytest.raises(TypeError):
            tm.execute(tx_id, "kinds", "lock", match={"id": value})
        tm.rollback(tx_id)
    assert kinds.execute("select count(*) from kinds").fetchone() == (0,)


@pytest.mark.parametrize(
    "text", ["\x00decimal:1", "\x00:1", "\x00" + "0" * 32 + ":1", "\\u0000:1", "1.5"]
)
def test_strings_never_turn_into_numbers(text: str) -> None:
    """Only a Decimal becomes a bare number, whatever a string holds."""
    text_sent = dumps({"s": text, "n": [decimal.Decimal("2.50")]})
    assert json.loads(text_sent)["s"] == text
    assert text_sent.endswith('"n": [2.50]}')
