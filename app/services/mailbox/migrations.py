"""Data rewrites an upgrade needs, run by every process at start-up after the indexes.

Each step is idempotent and resumable (a process killed half-way leaves work the next start
finishes), and is marked done in ``schema_migrations``: once done, a start-up costs one read.
Processes of the old version should be stopped first; two new processes migrating at once
write the same values.

Steps of other packages run from the same list (``app/bootstrap.py``): ``campaign-lists``
(``app.services.campaigns.lists.parts_from_rows``).

``thread-keys``: thread refs get the user and the Message-ID as their ``_id``
(``thread_ref_id``; copied with filing's own ``thread_ref_write``) and threads a
``subject_key`` (``thread_subject_key``), so the thread context of a whole batch is two
``$in`` queries (``app.services.mailbox.filing``). Refs are copied under the new ``_id``
before the originals go, so a crash in between loses nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.mongo import UpdateOne
from app.domain.filing_plan import ThreadRef, thread_subject_key
from app.services.mailbox.filing import thread_ref_write

log = structlog.get_logger(__name__)

PAGE = 1000  # documents rewritten a round
Step = Callable[[Any], Awaitable[int]]  # a step: rewrites, returns how many documents
# the smallest ObjectId: {"$gte": it} is the ObjectId part of an _id index (MongoDB compares
# within a BSON type), which is where the earlier layout's refs are
FIRST_OBJECT_ID = ObjectId("0" * 24)


async def migrate(db: Any, steps: list[tuple[str, Step]] | None = None) -> None:
    """Run every step not marked done yet, in order: ``steps`` (the start-up's list,
    app/bootstrap.py: these and other packages' own), or this module's."""
    done = {doc["_id"] for doc in await db.schema_migrations.find({}, {"_id": 1}).to_list()}
    for name, step in STEPS if steps is None else steps:
        if name in done:
            continue
        rewritten = await step(db)
        await db.schema_migrations.update_one(
            {"_id": name}, {"$setOnInsert": {"done_at": datetime.now(UTC)}}, upsert=True
        )
        log.info("data migration done", migration=name, documents=rewritten)


async def thread_keys(db: Any) -> int:
    rewritten = 0
    while True:  # the refs with an ObjectId _id: their index range, oldest first
        old = (
            await db.thread_refs.find({"_id": {"$gte": FIRST_OBJECT_ID}})
            .sort("_id", 1)
            .limit(PAGE)
            .to_list()
        )
        if not old:
            break
        await db.thread_refs.bulk_write(
            [
                thread_ref_write(ThreadRef(doc["user_id"], doc["rfc822_id"], doc["thread_id"]))
                for doc in old
            ],
            ordered=False,
        )
        await db.thread_refs.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}})
        rewritten += len(old)
    after = FIRST_OBJECT_ID
    while True:  # every thread once, in _id pages (a filter on the missing field would scan)
        threads = (
            await db.threads.find(
                {"_id": {"$gt": after}}, {"user_id": 1, "normalized_subject": 1, "subject_key": 1}
            )
            .sort("_id", 1)
            .limit(PAGE)
            .to_list()
        )
        if not threads:
            break
        after = threads[-1]["_id"]
        missing = [
            UpdateOne({"_id": doc["_id"]}, {"$set": {"subject_key": key}})
            for doc in threads
            if doc.get("subject_key")
            != (key := thread_subject_key(doc["user_id"], doc.get("normalized_subject") or ""))
        ]
        if missing:
            await db.threads.bulk_write(missing, ordered=False)
            rewritten += len(missing)
    return rewritten


STEPS: list[tuple[str, Step]] = [("thread-keys", thread_keys)]
