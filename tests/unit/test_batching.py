"""Batcher: one runner, batches of whatever queued meanwhile, every waiter answered or failed."""

from __future__ import annotations

import asyncio

import pytest

from app.batching import Batcher, Waiter


class Recorder:
    """A process that records its batches and answers each item with its double; a batch can
    be held open (``gate``) to queue more items while it runs."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, waiters: list[Waiter[int, int]]) -> None:
        self.batches.append([w.item for w in waiters])
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        for w in waiters:
            w.answer(w.item * 2)


async def test_items_queued_together_are_one_batch_and_each_gets_its_own_answer():
    process = Recorder()
    batcher = Batcher(process)
    answers = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)))
    assert answers == [2, 4, 6]
    assert process.batches == [[1, 2, 3]]


async def test_submit_many_queues_items_together_and_gives_each_answer_or_error_in_order():
    async def process(waiters: list[Waiter[int, int]]) -> None:
        for w in waiters:
            if w.item % 3 == 0:
                w.fail(ValueError(f"no {w.item}"))
            else:
                w.answer(w.item * 2)

    batcher: Batcher[int, int] = Batcher(process, max_items=4)
    answers = await batcher.submit_many(list(range(1, 8)))
    assert [a if isinstance(a, int) else str(a) for a in answers] == [
        2, 4, "no 3", 8, 10, "no 6", 14
    ]  # fmt: skip
    assert batcher.idle


async def test_items_queued_while_a_batch_runs_go_in_the_next_batch():
    process = Recorder()
    process.gate = asyncio.Event()
    batcher = Batcher(process)
    first = asyncio.create_task(batcher.submit(1))
    await process.started.wait()
    later = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    assert batcher.queued == 2 and batcher.in_batch == 1
    process.gate.set()
    assert [await first] + [await t for t in later] == [2, 4, 6]
    assert process.batches == [[1], [2, 3]]
    assert batcher.idle


async def test_a_failure_fails_that_batch_s_waiters_and_the_next_batch_runs():
    calls = 0

    async def process(waiters: list[Waiter[int, int]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("boom")
        for w in waiters:
            w.answer(w.item)

    batcher: Batcher[int, int] = Batcher(process, failed=lambda e: ValueError(f"wrapped {e!r}"))
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, ValueError) and "boom" in str(r) for r in results)
    assert await batcher.submit(3) == 3


async def test_batches_are_bounded_by_count_and_by_size():
    process = Recorder()
    by_count = Batcher(process, max_items=2)
    await asyncio.gather(*(by_count.submit(i) for i in range(5)))
    assert process.batches == [[0, 1], [2, 3], [4]]

    process = Recorder()
    by_size = Batcher(process, max_size=10, size_of=lambda i: i)
    await asyncio.gather(*(by_size.submit(i) for i in (6, 3, 4, 20, 1)))
    # a batch takes items until it reaches the size (the item that crosses it included)
    assert process.batches == [[6, 3, 4], [20], [1]]


async def test_a_caller_that_stopped_waiting_is_left_out_of_the_next_batch():
    process = Recorder()
    process.gate = asyncio.Event()
    batcher = Batcher(process)
    first = asyncio.create_task(batcher.submit(1))
    await process.started.wait()
    gone = asyncio.create_task(batcher.submit(2))
    stays = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    process.gate.set()
    assert await first == 2 and await stays == 6
    assert gone.cancelled()
    assert process.batches == [[1], [3]]


async def test_a_process_may_answer_early_and_keep_working_before_the_next_batch():
    finish = asyncio.Event()
    phases: list[str] = []

    async def process(waiters: list[Waiter[int, int]]) -> None:
        for w in waiters:
            w.answer(w.item)
        await finish.wait()  # the follow-up work (a hand-over, a notification)
        phases.append(f"finished {[w.item for w in waiters]}")

    batcher: Batcher[int, int] = Batcher(process)
    assert await batcher.submit(1) == 1  # answered while the batch is still working
    assert phases == []
    second = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    assert batcher.queued == 1  # waits for the first batch to finish
    finish.set()
    assert await second == 2
    assert phases == ["finished [1]", "finished [2]"]


async def test_an_item_the_process_did_not_answer_fails_instead_of_hanging():
    async def forgetful(waiters: list[Waiter[int, int]]) -> None:
        waiters[0].answer(0)

    batcher: Batcher[int, int] = Batcher(forgetful)
    first, second = await asyncio.gather(
        batcher.submit(1), batcher.submit(2), return_exceptions=True
    )
    assert first == 0
    assert isinstance(second, RuntimeError)


async def test_close_stops_a_running_batch_and_cancels_every_waiter():
    process = Recorder()
    process.gate = asyncio.Event()  # never set: the batch hangs
    batcher = Batcher(process)
    running = asyncio.create_task(batcher.submit(1))
    await process.started.wait()
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    await batcher.close()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(RuntimeError):
        await batcher.submit(3)


async def test_items_put_without_a_waiter_are_processed_and_can_be_put_back_for_later():
    seen: list[list[str]] = []
    done = asyncio.Event()

    async def process(waiters: list[Waiter[str, None]]) -> None:
        items = [w.item for w in waiters]
        seen.append(items)
        if "retry" in items:
            batcher.put_back(["retry again"])
        if "retry again" in items:
            done.set()

    batcher: Batcher[str, None] = Batcher(process)
    batcher.put("a")
    batcher.put("retry")
    await done.wait()
    assert seen == [["a", "retry"], ["retry again"]]


async def test_a_lingering_runner_gathers_a_burst_that_arrives_after_the_first_item():
    process = Recorder()
    batcher = Batcher(process, linger=0.05, max_items=10)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the runner is lingering now
    rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    assert [await first] + [await t for t in rest] == [2, 4, 6]
    assert process.batches == [[1, 2, 3]]


async def test_items_put_without_a_waiter_stay_counted_when_close_stops_their_batch():
    started = asyncio.Event()

    async def hangs(waiters: list[Waiter[str, None]]) -> None:
        started.set()
        await asyncio.Event().wait()

    batcher: Batcher[str, None] = Batcher(hangs)
    batcher.put("being written")
    await started.wait()
    batcher.put("queued")
    await batcher.close()
    assert batcher.queued == 2 and not batcher.idle  # neither was written: the owner can tell
    batcher.put("after close")  # accepted and counted, never processed
    assert batcher.queued == 3
