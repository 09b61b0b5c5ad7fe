"""stop_task ends a task even when a cancellation is swallowed (Python 3.11's wait_for does
that when a result lands in the same iteration: PyMongo's async I/O goes through it); all_of
raises the first failure of several awaitables as itself."""

from __future__ import annotations

import asyncio

import pytest

from app.background import all_of, stop_task


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


async def test_all_of_returns_results_in_order():
    async def value(n: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return n

    assert await all_of([value(1, 0.02), value(2, 0.0), value(3, 0.01)]) == [1, 2, 3]


async def test_all_of_raises_a_failure_as_itself_once_the_rest_have_ended_on_their_own():
    class Unreachable(Exception):
        pass

    ended: list[str] = []

    async def slower() -> int:
        try:
            await asyncio.sleep(0.05)  # a query running into its own timeout
            ended.append("finished")
        except asyncio.CancelledError:  # what cancelling it inside PyMongo would be
            ended.append("cancelled")
            raise
        return 0

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise Unreachable("the database is gone")

    with pytest.raises(Unreachable):  # not an ExceptionGroup: callers tell errors by type
        await all_of([slower(), failing()])
    assert ended == ["finished"]  # not cancelled: it ended before the failure was raised


async def test_cancelling_all_of_cancels_what_it_awaits():
    cancelled = asyncio.Event()

    async def waiting() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    task = asyncio.ensure_future(all_of([waiting()]))
    await asyncio.sleep(0.01)
    assert await stop_task(task) is True
    assert cancelled.is_set()
