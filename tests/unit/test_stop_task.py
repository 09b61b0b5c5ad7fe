"""stop_task ends a task even when a cancellation is swallowed (Python 3.11's wait_for does
that when a result lands in the same iteration: PyMongo's async I/O goes through it)."""

from __future__ import annotations

import asyncio

from app.background import stop_task


async def _swallows_one_cancel(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass  # what wait_for does when the awaited operation finished at the same moment
    await asyncio.Event().wait()  # like a loop going back to wait for its next request


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_swallows_one_cancel(started))
    await started.wait()
    # a single cancel leaves it running: the hang the delivery tests hit on shutdown
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done
    assert await stop_task(task, grace=5) is True
    assert task.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_after_the_grace() -> None:
    relent = False

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if relent:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_task(task, grace=0.6) is False
    assert not task.done()
    relent = True
    assert await stop_task(task, grace=5) is True


async def test_a_finished_or_missing_task_is_already_stopped() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    assert await stop_task(task) is True  # its exception is discarded
    assert await stop_task(None) is True
