"""Stopping background tasks reliably on Python 3.11.

Python 3.11's ``asyncio.wait_for`` returns the inner result instead of raising when a
cancellation arrives in the same loop iteration as that result (gh-86296, fixed in 3.12 by
reimplementing it on ``asyncio.timeout``). PyMongo's async network layer awaits every socket
write and pool wait through ``wait_for``, so a ``task.cancel()`` that lands while a loop task
is in a database call can be swallowed: the loop carries on, waits for its next piece of work,
and ``await task`` never returns. ``stop_task`` cancels again until the task is really done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

RECANCEL_EVERY = 0.25  # seconds between cancellations of a task that swallowed one


async def stop_task(task: asyncio.Task[Any] | None, grace: float = 30.0) -> bool:
    """Cancel ``task`` and wait for it to end, cancelling again while it lives (at most
    ``grace`` seconds); True when it ended. Its result or exception is discarded."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.wait({task}, timeout=min(RECANCEL_EVERY, remaining))
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
    return True


async def all_of(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await ``awaitables`` together and return their results in order. A failure is raised as
    itself (``asyncio.TaskGroup`` would wrap it in an ExceptionGroup, and callers tell
    database errors apart by their type: transient, retry; unreachable, 451 now) once the
    others have **ended on their own**: they are not cancelled. Cancelling a PyMongo query
    while it waits in server selection (the database has just gone) left the client's topology
    lock taken in 5 of 9 outage runs of the send group commit's test, after which that client
    never answered again, database back or not. The others end by their own timeouts
    (``serverSelectionTimeoutMS``) when the database is gone, or finish when it is not. Only a
    cancellation of the caller cancels them (``gather`` passes it on)."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
