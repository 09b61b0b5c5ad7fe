"""Durable store of inbound mail with group commit (DESIGN.md §6: durable before 250).

Concurrent SMTP sessions hand their prepared messages to one committer (``app.batching``);
it writes everything that queued up while the previous transaction ran — raw MIME and
attachments as GridFS files, attachment docs, messages, views, thread records and folder
counters — in ONE transaction, with set-wise reads and ``insert_many``/``bulk_write`` instead
of per-message round trips. A session gets its answer when that transaction commits
(journaled, majority), and only then says 250; listeners hear of the new views after that.

Views, threads, counters and change records come from the one filing path
(``app.services.mailbox.filing.file_messages``) that every message takes: the pure planner
files the whole batch in memory after one set of reads, instead of a round trip per message,
because on the database we test with every round trip costs ~1 ms and per-message filing caps
the MX far below the benchmark target.

Retries after a lost 250 store nothing twice: each view carries ``dedupe_key`` (Message-ID +
content hash), unique per user. A concurrent duplicate from another process makes the batch
fail on that index; the batch is then re-run one message at a time so only the duplicate drops.
The same re-run covers a thread ref (a Message-ID's thread, per user) that another writer made
between the batch's reads and its transaction: the batch inserts its new refs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters import metrics
from app.adapters.blob_batches import gridfs_documents
from app.adapters.mongo import (
    DatabaseError,
    Mongo,
    in_transaction,
    is_duplicate_key,
    retrying_conflicts,
    storage_failure,
)
from app.background import stop_task
from app.batching import Batcher, Waiter
from app.domain.changes import Change
from app.domain.filing_plan import ThreadContext
from app.services.after_commit import Notifier
from app.services.mailbox.filing import Filing, ViewSpec, file_messages, load_thread_context

log = structlog.get_logger(__name__)

BUCKET = "blobs"
MAX_BATCH_BYTES = 16 * 1024 * 1024
CONTEXT_READS = 2  # the thread context's two queries (refs, subjects) go together


@dataclass(frozen=True)
class BlobWrite:
    blob_id: ObjectId
    data: bytes
    filename: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class InboundView:
    user_id: ObjectId
    folder: str
    spam: dict[str, Any] | None = None


@dataclass
class PreparedInbound:
    """Everything one accepted message writes; built before the transaction, pure data."""

    message: dict[str, Any]
    views: list[InboundView]
    dedupe_key: str
    blobs: list[BlobWrite] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(b.data) for b in self.blobs)


@dataclass(frozen=True)
class StoreResult:
    message_id: ObjectId | None  # None: every recipient already had this message (a retry)
    items: int


class InboundStore:
    def __init__(self, mongo: Mongo, notifier: Notifier, *, max_batch: int = 64) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.notifier = notifier
        # A batch: what queued while the previous transaction ran, up to max_batch messages
        # and about MAX_BATCH_BYTES of blobs (always at least one message).
        self._batcher: Batcher[PreparedInbound, StoreResult] = Batcher(
            self._commit_batch,
            max_items=max_batch,
            max_size=MAX_BATCH_BYTES,
            size_of=lambda prepared: prepared.size,
            failed=storage_failure("mail store", retry_after_seconds=60),
        )

    async def store(self, prepared: PreparedInbound) -> StoreResult:
        """Queue one message for the next group commit; returns once it is durable."""
        return await self._batcher.submit(prepared)

    async def _commit_batch(self, waiters: list[Waiter[PreparedInbound, StoreResult]]) -> None:
        started = time.perf_counter()
        results, changes = await self._commit([w.item for w in waiters])
        metrics.mx_commit(len(waiters), time.perf_counter() - started)
        for waiter, result in zip(waiters, results, strict=True):
            waiter.answer(result)  # durable: the session may say 250 now
        await self.notifier.committed(changes)

    async def _commit(self, batch: list[PreparedInbound]) -> tuple[list[StoreResult], list[Change]]:
        try:
            return await self._transaction(batch)
        except DatabaseError as e:
            if not is_duplicate_key(e):
                raise
        # Another process filed one of these messages (or claimed one of their thread refs)
        # between our read and our write.
        results: list[StoreResult] = []
        changes: list[Change] = []
        for prepared in batch:
            one, more = await self._transaction([prepared])
            results += one
            changes += more
        return results, changes

    async def _transaction(
        self, batch: list[PreparedInbound]
    ) -> tuple[list[StoreResult], list[Change]]:
        """One transaction for the batch; write conflicts with other MX processes (the same
        user's counters) are retried with a short random backoff, never surfaced as 451.

        The reads come first, outside the transaction and together (the duplicate check and
        the thread context's two queries: one round trip's wait); the
        transaction then only writes. Reading them inside it would not be safer: a snapshot
        read is as old as the transaction's start, and the unique index on ``dedupe_key``
        still refuses a duplicate filed in between (the batch is then re-run one by one).
        """

        async def attempt() -> tuple[list[StoreResult], list[Change]]:
            plan, context = await self._reads(batch)
            return await in_transaction(  # type: ignore[no-any-return]
                self.mongo, lambda session: self._write(plan, context, session)
            )

        return await retrying_conflicts(attempt, what="inbound batch", size=len(batch))

    async def _reads(
        self, batch: list[PreparedInbound]
    ) -> tuple[list[tuple[PreparedInbound, list[InboundView]]], ThreadContext]:
        """The batch without what is stored already, and the thread context of all its views
        (a superset when some turn out to be duplicates: their lookups are simply unused)."""
        now = datetime.now(UTC)
        everyone = [_filing(prepared, prepared.views, now) for prepared in batch]
        duplicates = asyncio.ensure_future(self._without_duplicates(batch, None))
        try:
            context = await load_thread_context(self.db, everyone, None, parallel=CONTEXT_READS)
        except asyncio.CancelledError:  # the MX is stopping
            await stop_task(duplicates, grace=5.0)
            raise
        except BaseException:  # raised as itself (the caller tells errors apart by type)
            # The duplicate check ends on its own (see app.background.all_of: a query
            # cancelled in server selection can leave the client stuck for good).
            await asyncio.wait({duplicates})
            if not duplicates.cancelled():
                duplicates.exception()  # retrieved: its failure is this one's twin
            raise
        return await duplicates, context

    async def _write(
        self,
        plan: list[tuple[PreparedInbound, list[InboundView]]],
        context: ThreadContext,
        session: Any,
    ) -> tuple[list[StoreResult], list[Change]]:
        now = datetime.now(UTC)
        filings: list[Filing] = []
        results: list[StoreResult] = []
        files: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        attachments: list[dict[str, Any]] = []
        for prepared, views in plan:
            if not views:
                results.append(StoreResult(None, 0))
                continue
            for blob in prepared.blobs:
                file_doc, blob_chunks = gridfs_documents(
                    blob.blob_id, blob.data, blob.filename, blob.metadata, now
                )
                files.append(file_doc)
                chunks += blob_chunks
            messages.append({**prepared.message, "created_at": now})
            attachments += [{**a, "created_at": now} for a in prepared.attachments]
            filings.append(_filing(prepared, views, now))
            results.append(StoreResult(prepared.message["_id"], len(views)))
        if not filings:
            return results, []
        db = self.db
        if files:
            await db[f"{BUCKET}.files"].insert_many(files, session=session)
        if chunks:
            await db[f"{BUCKET}.chunks"].insert_many(chunks, session=session)
        if attachments:
            await db.attachments.insert_many(attachments, session=session)
        await db.messages.insert_many(messages, session=session)
        # The same filing path as a single message: one planner over the whole batch. Its new
        # thread refs are inserted: one made since ``_reads`` is a duplicate key, and the batch
        # is re-run with new reads (``_commit``), as for a message filed in between.
        filed = await file_messages(db, filings, session, context, new_refs=True)
        return results, filed.changes

    async def _without_duplicates(
        self, batch: list[PreparedInbound], session: Any
    ) -> list[tuple[PreparedInbound, list[InboundView]]]:
        # Through messages.content_sha256 then mailbox_items.message_id: both plain indexes,
        # which every engine uses (the partial unique index on dedupe_key is the guarantee,
        # but not every MongoDB-compatible server plans queries with partial indexes).
        hashes = sorted({p.message["content_sha256"] for p in batch})
        same_bytes = await self.db.messages.find(
            {"content_sha256": {"$in": hashes}}, {"_id": 1}, session=session
        ).to_list()
        seen: set[tuple[ObjectId, str]] = set()
        if same_bytes:
            keys = sorted({p.dedupe_key for p in batch})
            found = await self.db.mailbox_items.find(
                {
                    "message_id": {"$in": [m["_id"] for m in same_bytes]},
                    "dedupe_key": {"$in": keys},
                },
                {"user_id": 1, "dedupe_key": 1},
                session=session,
            ).to_list()
            seen = {(d["user_id"], d["dedupe_key"]) for d in found}
        plan = []
        for prepared in batch:
            views = []
            for view in prepared.views:
                if (view.user_id, prepared.dedupe_key) not in seen:
                    seen.add((view.user_id, prepared.dedupe_key))
                    views.append(view)
            plan.append((prepared, views))
        return plan


def _filing(prepared: PreparedInbound, views: list[InboundView], now: datetime) -> Filing:
    specs = [
        ViewSpec(v.user_id, "received", v.folder, dedupe_key=prepared.dedupe_key, spam=v.spam)
        for v in views
    ]
    return Filing(prepared.message, specs, now)
