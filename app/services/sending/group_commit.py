"""The group commit of ``sendEmail`` (issue 17): concurrent sends share one transaction.

A send is checked, charged and built (MIME, recipients) by its own caller
(``SendingService.send_email``); what it writes is then handed to one committer per process
(``app.batching``). The committer writes every send that queued while the previous
transaction ran, whoever sent it, in ONE transaction: raw MIME (inline GridFS documents),
messages, recipients, their first events and the idempotency keys with one insert per
collection, every Sent view with one ``file_messages`` plan, then local recipients' Inbox
views, and each send's own extra work (sendDraft removes its draft) in the same transaction.
Each caller is answered only after that transaction has committed: nothing is acknowledged
that is not durable. On the database we run every command costs 1.5–2 ms of CPU, and one
transaction per send (~13 commands) capped sendEmail at ~16 sends/s however many clients
sent (docs/benchmarks.md, "Outbound flow mode").

One send cannot fail the others. A batch that fails for a reason a single send may carry (a
duplicate idempotency key raced by a concurrent call, a draft already sent, any error of a
send's own extra work) is run again one send at a time, so each caller gets the outcome it
would have had alone, as the MX's group commit does. Write conflicts are retried with a short
random backoff; a database that cannot be reached, or stays busy, fails the batch at once
(``ServiceUnavailable``). After commit, per send as before: attachments lose their expiry,
listeners hear of the changes, delivery jobs are enqueued — then the callers are answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import (
    Mongo,
    as_domain_error,
    in_transaction,
    is_transient,
    is_unreachable,
    is_write_conflict,
    retrying_conflicts,
    storage_failure,
)
from app.adapters.queue import JobQueue
from app.batching import Batcher, Waiter
from app.domain.changes import Change
from app.domain.filing_plan import ThreadContext
from app.domain.folders import Folder
from app.services.after_commit import Notifier
from app.services.mailbox.filing import Filing, ViewSpec, file_messages, load_thread_context
from app.services.sending.accepted import accepted_events, deliver_locally, delivery_jobs

log = structlog.get_logger(__name__)

MAX_BATCH = 64  # sends in one transaction
MAX_BATCH_BYTES = 16 * 1024 * 1024  # of raw MIME (a batch always takes at least one send)

# More work for the send's own transaction, returning its changes (sending a draft removes the
# draft in it).
AlsoInTransaction = Callable[[Any], Awaitable[list[Change]]]


@dataclass(frozen=True)
class PreparedSend:
    """Everything one checked send writes; built by its caller before the transaction."""

    user_id: ObjectId
    message: dict[str, Any]  # names its raw MIME blob (``raw_blob_id``)
    raw: bytes
    recipients: list[dict[str, Any]]
    attachment_ids: list[ObjectId]
    send_at: datetime | None
    now: datetime
    idempotency_key: str | None = None
    also_in_transaction: AlsoInTransaction | None = None


_Written = tuple[list[dict[str, Any]], list[Change]]  # (each send's Sent item, the changes)


class SendCommitter:
    def __init__(
        self,
        *,
        mongo: Mongo,
        blobs: BlobStore,
        queue: JobQueue,
        notifier: Notifier,
        hostname: str,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.blobs = blobs
        self.queue = queue
        self.notifier = notifier
        self.hostname = hostname
        self._batcher: Batcher[PreparedSend, dict[str, Any]] = Batcher(
            self._commit_batch,
            max_items=max_batch,
            max_size=MAX_BATCH_BYTES,
            size_of=lambda prepared: len(prepared.raw),
            failed=storage_failure("mail store", retry_after_seconds=5),
        )

    @property
    def queued(self) -> int:
        """Sends waiting for the next transaction (not counting the one being written)."""
        return self._batcher.queued

    async def commit(self, prepared: PreparedSend) -> dict[str, Any]:
        """Queue one send for the next group commit; returns its Sent item once it is durable,
        or raises what refused this send (a duplicate idempotency key, its extra work's
        error, ServiceUnavailable)."""
        return await self._batcher.submit(prepared)

    async def _commit_batch(self, waiters: list[Waiter[PreparedSend, dict[str, Any]]]) -> None:
        try:
            sent, changes = await self._transaction([w.item for w in waiters])
        except Exception as e:
            if len(waiters) == 1 or _whole_batch(e):
                for waiter in waiters:
                    waiter.fail(_refusal(e))
                return
            # One send may be the cause: each alone, so only that one fails.
            log.info("send batch failed; storing its sends one by one", n=len(waiters))
            for n, waiter in enumerate(waiters):
                try:
                    one, more = await self._transaction([waiter.item])
                except Exception as alone:
                    if _whole_batch(alone):  # the database went meanwhile: nobody waits on it
                        for rest in waiters[n:]:
                            rest.fail(_refusal(alone))
                        return
                    waiter.fail(_refusal(alone))
                    continue
                await self._after_commit([waiter], one, more)
            return
        await self._after_commit(waiters, sent, changes)

    async def _transaction(self, batch: list[PreparedSend]) -> _Written:
        """One transaction for the batch, retried on write conflicts with a short random
        backoff (never on an unreachable database: ServiceUnavailable now).

        The thread context of the Sent views is read first, outside the transaction, as the
        MX's group commit does (a snapshot read inside would be as old as the transaction's
        start). One query at a time, not in flight together as the MX reads it: when the
        database went away, the parallel read cancelled its other queries inside PyMongo's
        server selection, and in 5 of 9 runs of the outage test the client's topology lock
        stayed taken — no command of the process was ever answered again, even once the
        database was back. (``app.background.all_of`` now lets the others end on their own
        instead; one at a time stays here, as it cost nothing measurable.) Not when a send
        brings extra work: a draft's removal may delete the thread its Sent view would join, so
        the context is then read inside the transaction, after that work, as a send alone always
        did."""
        filings = [
            Filing(
                p.message,
                [ViewSpec(p.user_id, "sent", Folder.SENT.value, read=True)],
                p.now,
                fresh_message_id=True,  # send_email made it (make_message_id)
            )
            for p in batch
        ]

        async def attempt() -> _Written:
            context = (
                None
                if any(p.also_in_transaction is not None for p in batch)
                else await load_thread_context(self.db, filings, None)
            )
            return await in_transaction(  # type: ignore[no-any-return]
                self.mongo, lambda session: self._write(batch, filings, context, session)
            )

        return await retrying_conflicts(attempt, what="send batch", size=len(batch))

    async def _write(
        self,
        batch: list[PreparedSend],
        filings: list[Filing],
        context: ThreadContext | None,
        session: Any,
    ) -> _Written:
        db = self.db
        changes: list[Change] = []
        for p in batch:  # first, as a send alone ran it: the filing below sees what it did
            if p.also_in_transaction is not None:
                changes += await p.also_in_transaction(session)
        await self.blobs.put_many(
            [(p.raw, "message.eml", {"kind": "raw"}) for p in batch],
            ids=[p.message["raw_blob_id"] for p in batch],
            session=session,
        )
        await db.messages.insert_many([p.message for p in batch], session=session)
        recipients = [r for p in batch for r in p.recipients]
        if recipients:
            await db.recipients.insert_many(recipients, session=session)
            await db.delivery_events.insert_many(
                [e for p in batch for e in accepted_events(p.message, p.recipients, p.now)],
                session=session,
            )
        # The one filing path, one plan for every Sent view of the batch.
        filed = await file_messages(db, filings, session, context)
        changes += filed.changes
        for p in batch:
            if p.send_at is None:
                changes += await deliver_locally(
                    db, p.message, p.recipients, p.now, session, hostname=self.hostname
                )
        sent = [items[0] for items in filed.items]
        keys = [
            {"_id": f"{p.user_id}:{p.idempotency_key}", "item_id": item["_id"], "created_at": p.now}
            for p, item in zip(batch, sent, strict=True)
            if p.idempotency_key
        ]
        if keys:  # a key taken meanwhile (or twice in this batch) fails the batch here
            await db.idempotency_keys.insert_many(keys, session=session)
        return sent, changes

    async def _after_commit(
        self,
        waiters: list[Waiter[PreparedSend, dict[str, Any]]],
        sent: list[dict[str, Any]],
        changes: list[Change],
    ) -> None:
        """What follows a commit, for every send of it, before its caller is answered (as a
        send alone did it): attachments kept, listeners told, delivery jobs enqueued."""
        refused: dict[int, BaseException] = {}
        for n, waiter in enumerate(waiters):
            p = waiter.item
            if not p.attachment_ids:
                continue
            try:
                await self.db.attachments.update_many(
                    {"_id": {"$in": p.attachment_ids}},
                    {"$addToSet": {"message_ids": p.message["_id"]}, "$unset": {"expires_at": ""}},
                )
            except Exception as e:  # stored and queued all the same; its caller hears of it
                log.warning("attachments not marked sent", message=str(p.message["_id"]))
                refused[n] = _refusal(e)
        await self.notifier.committed(changes)
        await self.queue.enqueue_many(  # one Redis round trip for the whole commit
            [
                job
                for w in waiters
                for job in delivery_jobs(w.item.message, w.item.recipients, w.item.send_at)
            ]
        )
        for n, (waiter, item) in enumerate(zip(waiters, sent, strict=True)):
            if n in refused:
                waiter.fail(refused[n])
            else:
                waiter.answer(item)  # durable: the caller may answer its client now


def _whole_batch(e: BaseException) -> bool:
    """The failure is the database's, not one send's: running the sends alone would fail
    each the same way, later."""
    return is_unreachable(e) or is_transient(e) or is_write_conflict(e)


def _refusal(e: BaseException) -> BaseException:
    """What a caller is told: a database failure in our vocabulary (ServiceUnavailable), any
    other error as itself (a send alone raised it so)."""
    return as_domain_error(e) or e
