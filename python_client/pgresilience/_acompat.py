"""What the async sources use where sync and async differ only in kind (the
idea of psycopg's ``_acompat``). ``scripts/generate.py`` writes each sync
module from its async source by dropping ``async``/``await`` and renaming the
async names below (``ALock``, ``aspawn``, ...) to their sync twins."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "AEvent",
    "ALock",
    "Event",
    "Lock",
    "aevent_wait",
    "ainvoke",
    "ashield",
    "aspawn",
    "aspawn_in_child",
    "astop",
    "event_wait",
    "invoke",
    "shield",
    "spawn",
    "spawn_in_child",
    "stop",
]

ALock = asyncio.Lock
Lock = threading.Lock
AEvent = asyncio.Event
Event = threading.Event


async def aevent_wait(event: asyncio.Event, timeout: float) -> bool:
    """``event.wait(timeout)``: True when set, False on timeout."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def event_wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


async def ainvoke(function: Callable[..., Any], *args: Any) -> Any:
    """Call a callback that may be a plain function or a coroutine function."""
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def invoke(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


async def ashield(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` to its end even when the caller is cancelled
    meanwhile (the caller still gets its CancelledError): a cleanup such as a
    rollback must not be cut short by a second cancellation."""
    return await asyncio.shield(awaitable)


def shield(value: T) -> T:
    return value


def aspawn(target: Callable[[], Coroutine[Any, Any, None]], name: str) -> asyncio.Task[None]:
    """Run ``target`` in the background (a task; a daemon thread in sync code)."""
    return asyncio.create_task(target(), name=name)


def spawn(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def aspawn_in_child(
    target: Callable[[], Coroutine[Any, Any, None]], name: str
) -> asyncio.Task[None] | None:
    """In a forked child (a fork hook): start the background worker again.
    A task cannot (no event loop runs in a fork hook): None, and the caller
    starts it at its next use in a loop; a thread starts now."""
    return None


def spawn_in_child(target: Callable[[], None], name: str) -> threading.Thread | None:
    return spawn(target, name)


async def astop(task: asyncio.Task[None], timeout: float) -> None:
    """Stop a background worker whose stop event is already set: a task is
    cancelled at once; a thread is joined (it sees the event within ``timeout``)."""
    if task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def stop(thread: threading.Thread, timeout: float) -> None:
    if thread is not threading.current_thread():
        thread.join(timeout)
