"""Durable store of inbound mail with group commit (DESIGN.md §6: durable before 250).

Concurrent SMTP sessions hand their prepared messages to one committer; it writes everything
that queued up while the previous transaction ran — raw MIME and attachments as GridFS files,
attachment docs, messages, views, thread records and folder counters — in ONE transaction, with
set-wise reads and ``insert_many``/``bulk_write`` instead of per-message round trips. A session
gets its answer when that transaction commits (journaled, majority), and only then says 250.

The views, threads and counters follow exactly the rules of ``app.services.filing`` (header-first
threading, the subject fallback, counter deltas, thread summaries); they are computed for the
whole batch in memory instead of per message, because on the database we test with every
round trip costs ~1 ms and per-message filing caps the MX far below the benchmark target.

Retries after a lost 250 store nothing twice: each view carries ``dedupe_key`` (Message-ID +
content hash), unique per user. A concurrent duplicate from another process makes the batch
fail on that index; the batch is then re-run one message at a time so only the duplicate drops.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.blob_batches import BUCKET, gridfs_documents
from app.adapters.mongo import (
    DatabaseError,
    Mongo,
    UpdateOne,
    as_domain_error,
    in_transaction,
    is_duplicate_key,
    is_unreachable,
)
from app.domain.changes import Change
from app.domain.conversations import may_join_by_subject, thread_lookup_ids
from app.domain.errors import DomainError, ServiceUnavailable
from app.domain.folders import CounterKey, counter_deltas, merge_deltas
from app.services.after_commit import Notifier
from app.services.mailbox.filing import (
    MAX_PARTICIPANTS,
    THREAD_SUBJECT_WINDOW_DAYS,
    refresh_threads,
    summary_of,
)

log = structlog.get_logger(__name__)

MAX_BATCH_BYTES = 16 * 1024 * 1024
CONFLICT_RETRIES = 8


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
        self.max_batch = max_batch
        self._queue: list[tuple[PreparedInbound, asyncio.Future[StoreResult]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def store(self, prepared: PreparedInbound) -> StoreResult:
        """Queue one message for the next group commit; returns once it is durable."""
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch: list[tuple[PreparedInbound, asyncio.Future[StoreResult]]] = []
            size = 0
            while (
                self._queue
                and len(batch) < self.max_batch
                and (not batch or size < MAX_BATCH_BYTES)
            ):
                item = self._queue.pop(0)
                batch.append(item)
                size += item[0].size
            live = [(p, f) for p, f in batch if not f.done()]  # a client that hung up still commits
            try:
                results, changes = await self._commit([p for p, _ in live])
            except Exception as e:  # every waiter must get an answer
                error = _storage_error(e)
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
            await self.notifier.committed(changes)

    async def _commit(self, batch: list[PreparedInbound]) -> tuple[list[StoreResult], list[Change]]:
        try:
            return await self._transaction(batch)
        except DatabaseError as e:
            if not is_duplicate_key(e):
                raise
        # Another process filed one of these messages between our read and our write.
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
        user's counters) are retried with a short random backoff, never surfaced as 451."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                return await in_transaction(self.mongo, lambda session: self._write(batch, session))  # type: ignore[no-any-return]
            except DatabaseError as e:
                transient = (
                    e.has_error_label("TransientTransactionError") or _is_write_conflict(e)
                ) and not is_unreachable(e)  # a dead database: 451 now
                if not transient or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("inbound batch conflicted; retrying", attempt=attempt, size=len(batch))
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _write(
        self, batch: list[PreparedInbound], session: Any
    ) -> tuple[list[StoreResult], list[Change]]:
        now = datetime.now(UTC)
        plan = await self._without_duplicates(batch, session)
        threads = _ThreadPlanner(now)
        await threads.load(self.db, [(p, v) for p, views in plan for v in views], session)

        items: list[dict[str, Any]] = []
        changes: list[Change] = []
        deltas: dict[ObjectId, dict[CounterKey, dict[str, int]]] = {}
        results: list[StoreResult] = []
        files: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        attachments: list[dict[str, Any]] = []
        for prepared, views in plan:
            if not views:
                results.append(StoreResult(None, 0))
                continue
            message = prepared.message
            for blob in prepared.blobs:
                file_doc, blob_chunks = gridfs_documents(
                    blob.blob_id, blob.data, blob.filename, blob.metadata, now
                )
                files.append(file_doc)
                chunks += blob_chunks
            messages.append({**message, "created_at": now})
            attachments += [{**a, "created_at": now} for a in prepared.attachments]
            for view in views:
                thread_id = threads.assign(view.user_id, message)
                item = {
                    "_id": ObjectId(),
                    "user_id": view.user_id,
                    "message_id": message["_id"],
                    "role": "received",
                    "thread_id": thread_id,
                    "folder": view.folder,
                    "labels": [],
                    "read": False,
                    "starred": False,
                    "received_at": now,
                    "version": 1,
                    **summary_of(message),
                    "dedupe_key": prepared.dedupe_key,
                }
                if view.spam is not None:
                    item["spam"] = view.spam
                items.append(item)
                threads.add_item(item)
                merge_deltas(deltas.setdefault(view.user_id, {}), counter_deltas(None, item))
                changes.append(
                    Change(view.user_id, item["_id"], "created", thread_id, (view.folder,), item)
                )
            results.append(StoreResult(message["_id"], len(views)))

        if not items:
            return results, changes
        db = self.db
        if files:
            await db[f"{BUCKET}.files"].insert_many(files, session=session)
        if chunks:
            await db[f"{BUCKET}.chunks"].insert_many(chunks, session=session)
        if attachments:
            await db.attachments.insert_many(attachments, session=session)
        await db.messages.insert_many(messages, session=session)
        await db.mailbox_items.insert_many(items, session=session)
        await threads.save(db, session)
        counters = [
            UpdateOne(
                {"user_id": user, "kind": kind, "name": name},
                {"$inc": {"total": change["total"], "unread": change["unread"]}},
                upsert=True,
            )
            for user, per_user in deltas.items()
            for (kind, name), change in per_user.items()
            if change["total"] or change["unread"]
        ]
        if counters:
            await db.mailbox_counters.bulk_write(counters, ordered=False, session=session)
        await record_changes_batched(db, changes, session, now)  # the sync log, as file_message
        return results, changes

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


class _ThreadPlanner:
    """``filing._resolve_thread`` for a whole batch: two reads up front, decisions in memory."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.refs: dict[tuple[ObjectId, str], ObjectId] = {}  # (user, rfc822 id) → thread
        self.subjects: dict[ObjectId, str] = {}  # thread → normalized subject
        self.by_subject: dict[tuple[ObjectId, str], list[dict[str, Any]]] = {}  # newest first
        self.new_threads: dict[ObjectId, dict[str, Any]] = {}
        self.new_items: dict[ObjectId, list[dict[str, Any]]] = {}
        self.existing_touched: set[tuple[ObjectId, ObjectId]] = set()
        self.ref_writes: dict[tuple[ObjectId, str], ObjectId] = {}

    async def load(
        self, db: Any, pairs: list[tuple[PreparedInbound, InboundView]], session: Any
    ) -> None:
        users = sorted({v.user_id for _, v in pairs})
        if not users:
            return
        ids: set[str] = set()
        subjects: set[str] = set()
        for prepared, _ in pairs:
            m = prepared.message
            refs = thread_lookup_ids(m.get("in_reply_to"), m.get("references") or ())
            ids.update(i for i in [m.get("rfc822_message_id"), *refs] if i)
            if not refs and m.get("normalized_subject"):
                subjects.add(m["normalized_subject"])
        wanted = set(users)
        # One-field $in lookups, users filtered here: a compound index with $in on its leading
        # field is not used by every MongoDB-compatible engine (the one tests run on scans).
        if ids:
            for doc in await db.thread_refs.find(
                {"rfc822_id": {"$in": sorted(ids)}}, session=session
            ).to_list():
                if doc["user_id"] in wanted:
                    self.refs[(doc["user_id"], doc["rfc822_id"])] = doc["thread_id"]
        thread_ids = sorted(set(self.refs.values()))
        if thread_ids:
            for doc in await db.threads.find(
                {"_id": {"$in": thread_ids}}, {"normalized_subject": 1}, session=session
            ).to_list():
                self.subjects[doc["_id"]] = doc.get("normalized_subject") or ""
        if subjects:
            found = (
                await db.threads.find(
                    {"normalized_subject": {"$in": sorted(subjects)}},
                    {"participant_keys": 1, "latest_at": 1, "user_id": 1, "normalized_subject": 1},
                    session=session,
                )
                .sort("latest_at", -1)
                .to_list()
            )
            for doc in (d for d in found if d["user_id"] in wanted):
                self.by_subject.setdefault((doc["user_id"], doc["normalized_subject"]), []).append(
                    doc
                )

    def assign(self, user_id: ObjectId, message: dict[str, Any]) -> ObjectId:
        thread_id = self._resolve(user_id, message)
        refs = thread_lookup_ids(message.get("in_reply_to"), message.get("references") or ())
        for rfc822_id in dict.fromkeys(i for i in [message.get("rfc822_message_id"), *refs] if i):
            if (user_id, rfc822_id) not in self.refs:  # $setOnInsert: the first thread keeps the id
                self.refs[(user_id, rfc822_id)] = thread_id
                self.ref_writes[(user_id, rfc822_id)] = thread_id
        return thread_id

    def _resolve(self, user_id: ObjectId, message: dict[str, Any]) -> ObjectId:
        refs = thread_lookup_ids(message.get("in_reply_to"), message.get("references") or ())
        own = message.get("rfc822_message_id")
        lookup = ([own] if own else []) + [r for r in refs if r != own]
        subject_key = message.get("normalized_subject") or ""
        for ref in lookup:
            thread_id = self.refs.get((user_id, ref))
            if thread_id is None:
                continue
            if ref == own:
                return thread_id
            thread_subject = self.subjects.get(thread_id, "")
            # RFC 8621 §3: a changed subject starts a new conversation even when it replies.
            if not subject_key or not thread_subject or thread_subject == subject_key:
                return self._touch(user_id, thread_id)
            break
        if not refs and subject_key:
            people = {p["email"].casefold() for p in _participants(message)}
            for thread in self.by_subject.get((user_id, subject_key), [])[:5]:
                age = (self.now - thread["latest_at"]).days if thread.get("latest_at") else 0
                if age <= THREAD_SUBJECT_WINDOW_DAYS and may_join_by_subject(
                    has_reference_headers=False,
                    subject_key=subject_key,
                    thread_participants=set(thread.get("participant_keys") or ()),
                    participants=people,
                ):
                    return self._touch(user_id, thread["_id"])
        thread_id = ObjectId()
        self.new_threads[thread_id] = {
            "_id": thread_id,
            "user_id": user_id,
            "normalized_subject": subject_key,
            "subject": message.get("subject") or "",
            "created_at": self.now,
        }
        self.subjects[thread_id] = subject_key
        self.new_items[thread_id] = []
        if subject_key:
            self.by_subject.setdefault((user_id, subject_key), []).insert(
                0,
                {
                    "_id": thread_id,
                    "latest_at": self.now,
                    "user_id": user_id,
                    "participant_keys": [p["email"].casefold() for p in _participants(message)],
                },
            )
        return thread_id

    def _touch(self, user_id: ObjectId, thread_id: ObjectId) -> ObjectId:
        if thread_id not in self.new_threads:
            self.existing_touched.add((user_id, thread_id))
        return thread_id

    def add_item(self, item: dict[str, Any]) -> None:
        if item["thread_id"] in self.new_items:
            self.new_items[item["thread_id"]].append(item)

    async def save(self, db: Any, session: Any) -> None:
        if self.new_threads:
            await db.threads.insert_many(
                [
                    {**doc, **_thread_summary(self.new_items[tid])}
                    for tid, doc in self.new_threads.items()
                ],
                session=session,
            )
        if self.ref_writes:
            await db.thread_refs.bulk_write(
                [
                    UpdateOne(
                        {"user_id": user, "rfc822_id": rfc822_id},
                        {"$setOnInsert": {"thread_id": thread_id}},
                        upsert=True,
                    )
                    for (user, rfc822_id), thread_id in self.ref_writes.items()
                ],
                ordered=False,
                session=session,
            )
        if self.existing_touched:
            await refresh_threads(db, self.existing_touched, session)


async def record_changes_batched(
    db: Any, changes: list[Change], session: Any, now: datetime
) -> None:
    """``filing.record_changes`` in three round trips for any number of users.

    Same documents and numbering: each user's ``state`` grows by their number of changes and
    the changes take the values up to it, in order. Inside the transaction the users we just
    incremented are write-locked by us, so the values read back are exactly ours.
    """
    by_user: dict[ObjectId, list[Change]] = {}
    for change in changes:
        by_user.setdefault(change.user_id, []).append(change)
    if not by_user:
        return
    await db.users.bulk_write(
        [
            UpdateOne({"_id": user}, {"$inc": {"state": len(group)}})
            for user, group in by_user.items()
        ],
        ordered=False,
        session=session,
    )
    states = {
        d["_id"]: int(d.get("state") or 0)
        for d in await db.users.find(
            {"_id": {"$in": list(by_user)}}, {"state": 1}, session=session
        ).to_list()
    }
    log_docs = []
    for user, group in by_user.items():
        end = states.get(user) or len(group)
        for offset, change in enumerate(group):
            change.state = end - len(group) + 1 + offset
            log_docs.append(
                {
                    "user_id": user,
                    "seq": change.state,
                    "item_id": change.item_id,
                    "kind": change.kind,
                    "at": now,
                }
            )
    await db.mailbox_changes.insert_many(log_docs, session=session)


def _participants(doc: dict[str, Any]) -> list[dict[str, Any]]:
    people = [doc.get("from")] + list(doc.get("to") or []) + list(doc.get("cc") or [])
    return [p for p in people if p and p.get("email")]


def _thread_summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``filing.refresh_threads`` computes, for a thread whose items are all in this batch."""
    participants: dict[str, dict[str, Any]] = {}
    for item in items:
        for person in _participants(item):
            participants.setdefault(person["email"].casefold(), person)
    return {
        "message_count": len(items),
        "unread_count": sum(1 for i in items if not i.get("read")),
        "latest_at": items[-1]["received_at"],
        "subject": items[-1].get("subject") or "",
        "folders": sorted({i["folder"] for i in items}),
        "labels": sorted({label for i in items for label in i.get("labels") or ()}),
        "participants": list(participants.values())[:MAX_PARTICIPANTS],
        "participant_keys": list(participants)[:MAX_PARTICIPANTS],
    }


def _is_write_conflict(e: BaseException) -> bool:
    return getattr(e, "code", None) == 112  # WriteConflict


def _storage_error(e: BaseException) -> DomainError:
    translated = as_domain_error(e)
    if translated is not None:
        return translated
    log.error("inbound store failed", error=repr(e)[:500])
    return ServiceUnavailable("the mail store failed; try again later", retry_after_seconds=60)
