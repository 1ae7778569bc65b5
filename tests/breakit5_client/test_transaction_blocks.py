"""``tm.transaction()`` as apps write it: "commit on exit, roll back on
exception (then re-raise it)" (README, DESIGN.md). Whatever the body raises,
the writes go, the transaction ends ``rolled_back``, the body's own exception
object comes out, and no session is left inside a database transaction."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgresilience import AsyncTransactionManager, ClaimConflict, TransactionManager

from .conftest import open_database_transactions, statuses


class TextRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception has no text")


# Exceptions an app really raises whose text the database cannot take as is.
UNSENDABLE_TEXT: dict[str, Callable[[], BaseException]] = {
    "nul_byte": lambda: ValueError("bad input \x00 from the client"),
    # a Latin-1 filename as Python decodes it on a UTF-8 system
    "lone_surrogate": lambda: ValueError("cannot import " + os.fsdecode(b"caf\xe9.csv")),
    "str_raises": TextRaises,
    "keyboard_interrupt": KeyboardInterrupt,
    "system_exit": lambda: SystemExit(3),
}


@pytest.fixture
def items(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("create table items (id int primary key, note text not null)")
    conn.execute("select resilience.manage_table('items')")
    return conn


def _ids(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("select id from items order by id").fetchall()]


@pytest.mark.parametrize("make", UNSENDABLE_TEXT.values(), ids=UNSENDABLE_TEXT.keys())
def test_a_body_exception_of_any_text_rolls_back_and_comes_out_unchanged(
    dsn: str, items: psycopg.Connection[Any], make: Callable[[], BaseException]
) -> None:
    raised = make()
    with TransactionManager(dsn) as tm:
        with pytest.raises(type(raised)) as caught:
            with tm.transaction() as tx:
                tx.insert("items", {"id": 1, "note": "written"})
                raise raised
        assert caught.value is raised
        assert not getattr(caught.value, "__notes__", None), "the rollback failed"
    assert _ids(items) == []
    [(status, reason)] = statuses(items)
    assert status == "rolled_back"
    assert reason.startswith(type(raised).__name__)
    assert open_database_transactions(items) == []


@pytest.mark.parametrize("make", UNSENDABLE_TEXT.values(), ids=UNSENDABLE_TEXT.keys())
def test_an_async_body_exception_of_any_text_rolls_back_and_comes_out_unchanged(
    dsn: str, items: psycopg.Connection[Any], make: Callable[[], BaseException]
) -> None:
    raised = make()

    async def app() -> None:
        async with AsyncTransactionManager(dsn) as tm:
            with pytest.raises(type(raised)) as caught:
                async with tm.transaction() as tx:
                    await tx.insert("items", {"id": 1, "note": "written"})
                    raise raised
            assert caught.value is raised
            assert not getattr(caught.value, "__notes__", None), "the rollback failed"

    asyncio.run(asyncio.wait_for(app(), 60))
    assert _ids(items) == []
    [(status, reason)] = statuses(items)
    assert status == "rolled_back"
    assert reason.startswith(type(raised).__name__)
    assert open_database_transactions(items) == []


def test_an_exception_caught_inside_the_outer_block_rolls_back_only_the_inner_one(
    dsn: str, items: psycopg.Connection[Any]
) -> None:
    with TransactionManager(dsn) as tm:
        with tm.transaction(label="outer") as outer:
            outer.insert("items", {"id": 1, "note": "outer"})
            try:
                with tm.transaction(label="inner") as inner:
                    inner.insert("items", {"id": 2, "note": "inner"})
                    raise LookupError("inner step failed")
            except LookupError:
                pass
            outer.insert("items", {"id": 3, "note": "outer again"})
    assert _ids(items) == [1, 3]
    assert [s for s, _ in statuses(items)] == ["committed", "rolled_back"]
    assert open_database_transactions(items) == []


def test_an_exception_escaping_nested_blocks_rolls_back_both(
    dsn: str, items: psycopg.Connection[Any]
) -> None:
    with TransactionManager(dsn) as tm:
        with pytest.raises(ClaimConflict) as caught:
            with tm.transaction(label="outer") as outer:
                outer.insert("items", {"id": 1, "note": "outer"})
                with tm.transaction(label="inner") as inner:
                    inner.insert("items", {"id": 2, "note": "inner"})
                    # the inner block writes a row the outer one claimed: 55P03
                    inner.update("items", {"note": "stolen"}, match={"id": 1})
    assert caught.value.sqlstate == "55P03"
    assert isinstance(caught.value.detail, dict)
    assert _ids(items) == []
    assert [s for s, _ in statuses(items)] == ["rolled_back", "rolled_back"]
    assert open_database_transactions(items) == []


def test_a_cancelled_task_rolls_back_its_block(dsn: str, items: psycopg.Connection[Any]) -> None:
    async def app() -> None:
        async with AsyncTransactionManager(dsn) as tm:
            started = asyncio.Event()

            async def request() -> None:
                async with tm.transaction() as tx:
                    await tx.insert("items", {"id": 1, "note": "written"})
                    started.set()
                    await asyncio.sleep(60)  # the client went away meanwhile

            task = asyncio.create_task(request())
            await asyncio.wait_for(started.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async with tm.transaction() as tx:
                        await tx.insert("items", {"id": 2, "note": "written"})
                        await asyncio.sleep(60)

    asyncio.run(asyncio.wait_for(app(), 90))
    assert _ids(items) == []
    assert [s for s, _ in statuses(items)] == ["rolled_back", "rolled_back"]
    assert open_database_transactions(items) == []


def test_a_task_cancelled_again_while_its_block_rolls_back_still_rolls_back(
    dsn: str, items: psycopg.Connection[Any]
) -> None:
    # A server shutting down cancels a request task, then cancels it again
    # while the block's rollback is under way (the undo is made slow here).
    items.execute(
        "create function slow_undo() returns trigger language plpgsql as $$"
        " begin perform pg_sleep(1); return null; end $$"
    )
    items.execute(
        "create trigger slow_undo after delete on items"
        " for each statement execute function slow_undo()"
    )

    async def app() -> None:
        async with AsyncTransactionManager(dsn) as tm:
            started = asyncio.Event()

            async def request() -> None:
                async with tm.transaction() as tx:
                    await tx.insert("items", {"id": 1, "note": "written"})
                    started.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(request())
            await asyncio.wait_for(started.wait(), 30)
            task.cancel()
            await asyncio.sleep(0.3)  # the rollback's undo is running now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            for _ in range(100):  # the rollback may finish after the task
                if [s for s, _ in statuses(items)] == ["rolled_back"]:
                    break
                await asyncio.sleep(0.1)

    asyncio.run(asyncio.wait_for(app(), 90))
    assert _ids(items) == []
    assert [s for s, _ in statuses(items)] == ["rolled_back"]
    assert open_database_transactions(items) == []
