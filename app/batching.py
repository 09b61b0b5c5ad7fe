"""Batching: many concurrent callers, one runner, one round trip for all of them.

Callers queue an item and await its answer (``submit``), or just hand it in (``put``); one
runner takes everything queued while the previous batch ran and processes it as one batch; a
failure fails that batch's waiters. On a database that costs a journal flush per write this is
what lets the MX commit many messages in one transaction (inbound group commit), concurrent
lookups share one query (``SharedLookup``), delivery lanes share one leasing round, and
delivery outcomes go into MongoDB a few hundred at a time.

Every answer comes from a batch that started after the question was asked, so it is as fresh
as a call of its own. A caller that has gone (its task was cancelled) is left out of the next
batch. ``close`` stops the runner (``stop_task``: Python 3.11 can swallow a cancel) and
cancels every waiter still without an answer, so nobody waits forever; items handed in
without a waiter stay counted, so an owner can tell that some were never processed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from app.background import stop_task

T = TypeVar("T")
R = TypeVar("R")


class Waiter(Generic[T, R]):
    """One queued item and the answer its caller awaits (none for ``put``)."""

    __slots__ = ("item", "_future")

    def __init__(self, item: T, future: asyncio.Future[R] | None) -> None:
        self.item = item
        self._future = future

    @property
    def waiting(self) -> bool:
        """Someone still awaits an answer."""
        return self._future is not None and not self._future.done()

    @property
    def asked(self) -> bool:
        """Queued with ``submit`` (a caller wants an answer), not handed in with ``put``."""
        return self._future is not None

    @property
    def gone(self) -> bool:
        """The caller asked and stopped waiting (cancelled) before the batch took it."""
        return self._future is not None and self._future.done()

    def answer(self, result: R) -> None:
        """Answer the caller (the first answer counts; later ones are ignored)."""
        if self.waiting:
            assert self._future is not None
            self._future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if self.waiting:
            assert self._future is not None
            self._future.set_exception(error)

    def cancel(self) -> None:
        if self.waiting:
            assert self._future is not None
            self._future.cancel()


Process = Callable[[list[Waiter[T, R]]], Awaitable[None]]


class Batcher(Generic[T, R]):
    """Runs ``process`` over batches of queued items, one batch at a time.

    ``process(waiters)`` answers each waiter (it may answer some early and go on working:
    the next batch starts only when it returns). Whatever it leaves unanswered fails: with
    ``failed(error)`` (default: the error itself) when it raised, else with a RuntimeError.

    ``max_items``/``max_size`` bound a batch (``size_of`` weighs an item; a batch always takes
    at least one). ``linger``: when a runner wakes to fewer than ``max_items`` items it waits
    this long first, so a burst lands in one batch.
    """

    def __init__(
        self,
        process: Process[T, R],
        *,
        max_items: int | None = None,
        max_size: int | None = None,
        size_of: Callable[[T], int] | None = None,
        linger: float = 0.0,
        failed: Callable[[Exception], BaseException] | None = None,
    ) -> None:
        if max_size is not None and size_of is None:
            raise ValueError("max_size needs size_of")
        self._process = process
        self._max_items = max_items
        self._max_size = max_size
        self._size_of = size_of
        self._linger = linger
        self._failed = failed
        self._queue: deque[Waiter[T, R]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._batch: list[Waiter[T, R]] = []
        self._closed = False

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the one being processed)."""
        return len(self._queue)

    @property
    def in_batch(self) -> int:
        """Items in the batch being processed now."""
        return len(self._batch)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._batch

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its answer."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        self._forget_other_loops(loop)
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append(Waiter(item, future))
        self._wake(loop)
        return await future

    async def submit_many(self, items: list[T]) -> list[R | BaseException]:
        """``submit`` of each item, queued together: each one's answer or error, in order. One
        future per item and no task per item (a batch call of 500 sends spent more on 500
        tasks than on its group commit)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        self._forget_other_loops(loop)
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._queue.extend(Waiter(item, f) for item, f in zip(items, futures, strict=True))
        self._wake(loop)
        return await asyncio.gather(*futures, return_exceptions=True)

    def put(self, item: T) -> None:
        """Queue ``item`` for the next batch; nobody waits for its answer."""
        loop = asyncio.get_running_loop()
        self._forget_other_loops(loop)
        self._queue.append(Waiter(item, None))
        self._wake(loop)

    def put_back(self, items: list[T]) -> None:
        """Return unanswered items to the front of the queue, in order (a batch that must be
        retried later; called from ``process``, whose runner takes them next)."""
        self._queue.extendleft(Waiter(item, None) for item in reversed(items))

    async def close(self) -> None:
        """Stop the runner; every waiter without an answer is cancelled. Items handed in with
        ``put`` and not processed stay queued (``queued`` counts them) but no runner takes
        them any more; submitting after close raises."""
        self._closed = True
        await stop_task(self._runner)
        for waiter in self._queue:
            waiter.cancel()
        self._queue = deque(w for w in self._queue if not w.asked)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed:
            return
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())

    def _forget_other_loops(self, loop: asyncio.AbstractEventLoop) -> None:
        # A loop that closed with a batch in flight (tests run one loop after another): its
        # runner never finishes and its waiters are nobody's.
        if self._runner is not None and self._runner.get_loop() is not loop:
            self._runner = None
            self._batch = []
            self._queue = deque(
                w for w in self._queue if w._future is None or w._future.get_loop() is loop
            )

    async def _run(self) -> None:
        if self._linger and (self._max_items is None or len(self._queue) < self._max_items):
            await asyncio.sleep(self._linger)
        while self._queue:
            self._batch = batch = self._take()
            try:
                if batch:
                    await self._process(batch)
            except Exception as e:
                error = self._failed(e) if self._failed is not None else e
                for waiter in batch:
                    waiter.fail(error)
            except BaseException:  # cancelled (close): nobody waits for an answer forever
                for waiter in batch:
                    waiter.cancel()
                # what was handed in without a waiter was not processed: it stays queued
                self._queue.extendleft(w for w in reversed(batch) if not w.asked)
                raise
            else:
                for waiter in batch:
                    waiter.fail(RuntimeError("the batch gave this item no answer"))
            finally:
                self._batch = []

    def _take(self) -> list[Waiter[T, R]]:
        batch: list[Waiter[T, R]] = []
        size = 0
        while self._queue:
            if self._max_items is not None and len(batch) >= self._max_items:
                break
            if self._max_size is not None and batch and size >= self._max_size:
                break
            waiter = self._queue.popleft()
            if waiter.gone:
                continue
            batch.append(waiter)
            if self._size_of is not None:
                size += self._size_of(waiter.item)
        return batch


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedLookup(Generic[K, V]):
    """Concurrent lookups by key share one query: keys asked while a query runs go in the next.

    Every answer comes from a query sent after the question was asked, so it is as fresh as a
    query of its own; under load the MX sends one ``$in`` query where it sent one per message.
    A failed query fails everyone who waited for it.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._batcher: Batcher[list[K], dict[K, V]] = Batcher(self._lookup)

    async def get(self, keys: list[K]) -> dict[K, V]:
        """The values found for ``keys`` (a key with none is left out)."""
        return await self._batcher.submit(keys)

    async def _lookup(self, waiters: list[Waiter[list[K], dict[K, V]]]) -> None:
        found = await self._fetch(list(dict.fromkeys(k for w in waiters for k in w.item)))
        for waiter in waiters:
            waiter.answer({k: found[k] for k in waiter.item if k in found})
