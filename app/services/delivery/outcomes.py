"""Recording outcomes: lanes hand in every attempt's reply, a recorder writes them in batches.

Lanes hand every attempt's reply here and move on to the next transaction; the recorder writes
what has gathered in one MongoDB transaction (a few milliseconds' worth: tens to hundreds of
recipients; outcome_writer.py writes one batch), then publishes live status and enqueues
retries. Batching is what lets one worker keep up with Postfix on a database that costs a
journal flush per write. The price is a wider "accepted but not yet recorded" window: a crash
inside it re-sends those messages once the domain lease expires (docs/delivery.md); lanes pause
while BACKLOG_MAX outcomes wait, which bounds it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import structlog

from app.adapters.mongo import DatabaseError, is_transient
from app.batching import Batcher, Waiter
from app.domain.bounces import SmtpOutcome
from app.services.delivery.outbox import Work
from app.services.delivery.outcome_writer import (
    Attempt,
    Outcome,
    OutcomeBatch,
    OutcomeWriter,
    Release,
    Suppressed,
)

log = structlog.get_logger(__name__)

FLUSH_MAX = 500  # recipients per transaction
RETRY_MAX = 5.0  # seconds between attempts to write outcomes the database refused
ROOM_WAIT = 0.5  # seconds a paused lane waits before looking again (and at shutdown)
BACKLOG_MAX = 1000  # outcomes waiting to be written before lanes pause (the duplicate window)
FLUSH_LINGER = 0.025  # seconds to let a batch gather once the first outcome is in


class OutcomeRecorder:
    """Takes outcomes from the lanes without blocking them and writes them in batches
    (``app.batching``); what the database refuses is retried with a growing pause."""

    def __init__(self, writer: OutcomeWriter) -> None:
        self.writer = writer
        # Outcomes gather while the previous transaction runs (a few ms' worth once one is in);
        # the next transaction writes up to FLUSH_MAX of them.
        self._outcomes: Batcher[Outcome, None] = Batcher(
            self._record, max_items=FLUSH_MAX, linger=FLUSH_LINGER
        )
        self._failures = 0  # transactions failed in a row (the retry backoff grows with it)
        self._done_callbacks: list[Any] = []  # called with the works settled
        self._writing = 0  # outcomes in the transaction being written
        self._room = asyncio.Event()

    # --- intake (never blocks the caller) -------------------------------------------------

    def attempted(self, work: Work, reply: SmtpOutcome, mx: str | None) -> None:
        self._outcomes.put(Attempt(work, reply, mx))

    def suppressed(self, work: Work) -> None:
        self._outcomes.put(Suppressed(work))

    def release(self, work: Work, due: datetime) -> None:
        """Give a recipient back without an attempt (throttled, shutting down, lease too short)."""
        self._outcomes.put(Release(work, due))

    def on_settled(self, callback: Any) -> None:
        """``callback(works)`` once their outcomes are committed (or given up on)."""
        self._done_callbacks.append(callback)

    @property
    def backlog(self) -> int:
        """Outcomes waiting for a transaction (not counting the one being written)."""
        return self._outcomes.queued

    @property
    def crowded(self) -> bool:
        """So many outcomes wait to be written that lanes should pause: every one of them is
        an accepted message a crash would send again (the duplicate window)."""
        return self._outcomes.queued + self._writing >= BACKLOG_MAX

    async def room(self) -> None:
        """Wait (at most ROOM_WAIT seconds) for the backlog to shrink below BACKLOG_MAX."""
        if self.crowded:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), ROOM_WAIT)

    # --- flushing -------------------------------------------------------------------------

    async def _record(self, waiters: list[Waiter[Outcome, None]]) -> None:
        """Write one batch; what could not be written goes back to the front of the queue
        and is tried again, with whatever arrived meanwhile, after a growing pause."""
        batch = OutcomeBatch.of([w.item for w in waiters])
        self._writing = len(batch)
        try:
            left = await self._write_around_conflicts(batch)
        except Exception:
            log.exception("recording delivery outcomes failed; retrying", n=len(batch))
            left = batch
        finally:
            self._writing = 0
            if not self.crowded:
                self._room.set()
        if not len(left):
            self._failures = 0
            return
        self._failures += 1
        self._outcomes.put_back(left.outcomes())
        await asyncio.sleep(min(RETRY_MAX, 0.5 * 2**self._failures))

    async def _write_around_conflicts(self, batch: OutcomeBatch) -> OutcomeBatch:
        """Write ``batch``; returns the part that could not be written yet.

        A write conflict that outlasts ``in_transaction``'s retries means another transaction
        holds one of the documents — typically a killed worker's, which the server aborts only
        when its lifetime runs out (60 s). The rest of the batch is written around it, halving,
        so one held recipient does not hold up every outcome behind it.
        """
        try:
            await self._flush(batch)
            return OutcomeBatch()
        except DatabaseError as e:
            if len(batch) == 1 or not is_transient(e):
                raise
        left = OutcomeBatch()
        for half in batch.halves():
            if len(half):
                try:
                    left.extend(await self._write_around_conflicts(half))
                except DatabaseError:
                    log.warning("recording delivery outcomes failed; retrying", n=len(half))
                    left.extend(half)
        return left

    async def drain(self, grace: float) -> None:
        """Wait until everything handed in so far is written (shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not self._outcomes.idle:
            if loop.time() > deadline:
                log.warning("delivery outcomes not recorded before shutdown", n=self.backlog)
                return
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop writing; outcomes not written yet stay in ``backlog``."""
        await self._outcomes.close()

    async def _flush(self, batch: OutcomeBatch) -> None:
        await self.writer.write(batch)
        for callback in self._done_callbacks:
            callback(batch.works())
