"""Filing: stored messages become per-user mailbox views, threaded and counted.

One path for every caller — local sends and drafts (sending/), DSNs (delivery/notices.py) and
the MX's group commit (inbound/group_commit.py): ``file_messages`` loads the thread context of
the batch in one set of queries (``load_thread_context``), lets the pure planner
(``app.domain.filing_plan``) decide every write, and applies the plan (``write_plan``) inside the
caller's transaction, so messages, views, threads, counters and the change log change together
or not at all. Filing one message is a batch of one.

Also here: the pieces every other mailbox write shares (moves, deletes, drafts): counter moves,
thread recounts and the per-user change log.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import UpdateOne
from app.background import all_of
from app.domain.changes import Change
from app.domain.filing_plan import (
    SUBJECT_CANDIDATES,
    THREAD_SUBJECT_WINDOW_DAYS,
    Filing,
    FilingPlan,
    ThreadCandidate,
    ThreadContext,
    ThreadRef,
    ViewSpec,
    plan_filing,
    summary_of,
    thread_lookups,
    thread_ref_id,
    thread_subject_key,
    thread_summary,
)
from app.domain.folders import CounterKey

SUBJECT_READ_CAP = 100  # subject candidates one context query returns (then: one by one)

__all__ = [
    "Filing",
    "ViewSpec",
    "apply_counter_deltas",
    "file_message",
    "file_messages",
    "load_thread_context",
    "record_changes",
    "refresh_threads",
    "summary_of",
    "thread_ref_doc",
    "thread_ref_write",
    "write_plan",
]


async def file_messages(
    db: Any,
    filings: Sequence[Filing],
    session: Any,
    context: ThreadContext | None = None,
    *,
    new_refs: bool = False,
) -> FilingPlan:
    """File every message of ``filings`` (in order) inside the caller's transaction.

    ``context``: the thread context, when the caller loaded it already (the MX's group commit
    loads it before its transaction, with its reads in flight together). ``new_refs``: see
    ``write_plan``."""
    if context is None:
        context = await load_thread_context(db, filings, session)
    plan = plan_filing(filings, context)
    await write_plan(db, plan, session, new_refs=new_refs)
    return plan


async def file_message(
    db: Any, message: dict[str, Any], views: list[ViewSpec], *, received_at: datetime, session: Any
) -> tuple[list[dict[str, Any]], list[Change]]:
    """Create the views of one ``message`` (a batch of one); returns (items, changes)."""
    plan = await file_messages(db, [Filing(message, views, received_at)], session)
    return plan.items[0], plan.changes


async def load_thread_context(
    db: Any,
    filings: Sequence[Filing],
    session: Any,
    *,
    parallel: int = 1,
    cap: int = SUBJECT_READ_CAP,
) -> ThreadContext:
    """What the planner needs to know about existing threads, for the batch's users only.

    Two queries for the whole batch, each an ``$in`` on one indexed value that names its user
    (so no user reads another's threads, issue 12): the thread refs by ``_id`` (user and
    Message-ID, ``thread_ref_id``) and the subject-fallback candidates by ``subject_key``
    (user and base subject), newest first, only those recent enough to be joined; then the
    subjects of the threads the refs named. The subject query returns at most ``cap``
    threads: when it is full, the oldest may have been cut off, and each (user, subject) left
    with fewer than SUBJECT_CANDIDATES is asked on its own. (One query per user and subject
    cost a batch about 20 round trips: 10 ms and more of the MX's group commit.)

    ``parallel``: more than 1 sends the two queries together. Only without a session (a
    transaction's session runs one command at a time): the MX's group commit reads the
    context of a batch before its transaction.
    """
    if session is not None and parallel > 1:
        raise ValueError("queries of one session run one at a time")
    wanted = thread_lookups(filings)
    context = ThreadContext()

    async def refs() -> None:
        if not wanted.rfc822_ids:
            return
        keys = {thread_ref_id(*pair): pair for pair in sorted(wanted.rfc822_ids)}
        for doc in await db.thread_refs.find(
            {"_id": {"$in": list(keys)}}, {"thread_id": 1}, session=session
        ).to_list():
            context.refs[keys[doc["_id"]]] = doc["thread_id"]

    async def subjects() -> None:
        if not wanted.subjects:
            return
        keys = {thread_subject_key(*pair): pair for pair in sorted(wanted.subjects)}
        for pair in keys.values():
            context.by_subject[pair] = []
        since = min(f.received_at for f in filings) - timedelta(days=THREAD_SUBJECT_WINDOW_DAYS + 1)
        found = (
            await db.threads.find(
                {"subject_key": {"$in": list(keys)}, "latest_at": {"$gte": since}},
                {"subject_key": 1, "participant_keys": 1, "latest_at": 1},
                session=session,
            )
            .sort("latest_at", -1)
            .limit(cap)
            .to_list()
        )
        for doc in found:
            add_candidate(keys[doc["subject_key"]], doc)
        if len(found) < cap:
            return
        # Full: what was cut off is older than every thread returned, so only a key with
        # fewer than SUBJECT_CANDIDATES here may be missing some.
        for key, pair in keys.items():
            if len(context.by_subject[pair]) >= SUBJECT_CANDIDATES:
                continue
            context.by_subject[pair] = []
            for doc in (
                await db.threads.find(
                    {"subject_key": key},
                    {"subject_key": 1, "participant_keys": 1, "latest_at": 1},
                    session=session,
                )
                .sort("latest_at", -1)
                .limit(SUBJECT_CANDIDATES)
                .to_list()
            ):
                add_candidate(pair, doc)

    def add_candidate(pair: tuple[ObjectId, str], doc: dict[str, Any]) -> None:
        context.by_subject[pair].append(
            ThreadCandidate(
                doc["_id"], doc.get("latest_at"), list(doc.get("participant_keys") or ())
            )
        )
        context.subjects[doc["_id"]] = pair[1]

    await _all([refs(), subjects()], parallel)
    named = sorted(set(context.refs.values()) - set(context.subjects))
    if named:  # the threads the users' own refs name: theirs by construction
        for doc in await db.threads.find(
            {"_id": {"$in": named}}, {"normalized_subject": 1}, session=session
        ).to_list():
            context.subjects[doc["_id"]] = doc.get("normalized_subject") or ""
    return context


async def _all(queries: list[Coroutine[Any, Any, None]], parallel: int) -> None:
    """Run ``queries`` in order, or together when ``parallel`` allows it (a failure is raised
    as itself and the rest are stopped)."""
    if parallel <= 1:
        for query in queries:
            await query
        return
    await all_of(queries)


async def write_plan(db: Any, plan: FilingPlan, session: Any, *, new_refs: bool = False) -> None:
    """Apply a filing plan inside the caller's transaction, in a round trip per collection.

    The plan's thread refs are the ones its context did not hold. They are upserted, which
    leaves a ref another writer made since that read as it is. ``new_refs``: inserted instead
    (SecantusDB spends less than half the CPU on an insert; docs/benchmarks.md, "Twenty-eighth
    session"), for a caller that re-runs the batch with new reads when a ref made since its
    read fails the insert with a duplicate key (the MX's group commit)."""
    items = plan.all_items
    if not items:
        return
    await db.mailbox_items.insert_many(items, session=session)
    if plan.new_threads:
        await db.threads.insert_many(plan.new_threads, session=session)
    if plan.thread_refs:
        if new_refs:
            await db.thread_refs.insert_many(
                [thread_ref_doc(ref) for ref in plan.thread_refs], ordered=False, session=session
            )
        else:
            await db.thread_refs.bulk_write(
                [thread_ref_write(ref) for ref in plan.thread_refs], ordered=False, session=session
            )
    if plan.refreshed_threads:
        await refresh_threads(db, plan.refreshed_threads, session)
    counters = []
    for (user_id, kind, name), move in plan.counters.items():
        if not move.total and not move.unread:
            continue
        update: dict[str, Any] = {"$inc": {"total": move.total, "unread": move.unread}}
        if move.first_at is not None:
            # first_at, the folder's oldest arrival, sizes a first page's time window.
            update["$min"] = {"first_at": move.first_at}
        counters.append(
            UpdateOne({"user_id": user_id, "kind": kind, "name": name}, update, upsert=True)
        )
    if counters:
        await db.mailbox_counters.bulk_write(counters, ordered=False, session=session)
    await record_changes(db, plan.changes, session)


def thread_ref_doc(ref: ThreadRef) -> dict[str, Any]:
    """``ref``'s document: its ``_id`` names the user and the Message-ID (``thread_ref_id``)."""
    return {
        "_id": thread_ref_id(ref.user_id, ref.rfc822_id),
        "user_id": ref.user_id,
        "rfc822_id": ref.rfc822_id,
        "thread_id": ref.thread_id,
    }


def thread_ref_write(ref: ThreadRef) -> UpdateOne:
    """Write ``ref`` unless the user has one for that Message-ID already (the first thread to
    claim an id keeps it)."""
    doc = thread_ref_doc(ref)
    return UpdateOne({"_id": doc.pop("_id")}, {"$setOnInsert": doc}, upsert=True)


async def record_changes(db: Any, changes: list[Change], session: Any) -> None:
    """Append changes to the owners' change logs, inside the caller's transaction.

    Each user has a monotonically increasing ``state``; every change gets the next value, so
    a client that saw state N asks ``changes(since: N)`` and gets exactly what it missed.
    Inside the transaction the users just incremented are write-locked by it, so the values
    read back are exactly ours. A user that no longer exists gets no log (nobody to sync).
    """
    by_user: dict[ObjectId, list[Change]] = {}
    for change in changes:
        by_user.setdefault(change.user_id, []).append(change)
    if not by_user:
        return
    # An update and a read, for one user as for several: a findAndModify would save the one
    # user a round trip, but SecantusDB runs it as a scan of the whole collection
    # (app.adapters.mongo.update_and_read).
    await db.users.bulk_write(
        [UpdateOne({"_id": u}, {"$inc": {"state": len(g)}}) for u, g in by_user.items()],
        ordered=False,
        session=session,
    )
    states: dict[ObjectId, int] = {}
    for doc in await db.users.find(
        {"_id": {"$in": list(by_user)}}, {"state": 1}, session=session
    ).to_list():
        states[doc["_id"]] = int(doc.get("state") or 0)
    now = datetime.now(UTC)
    log = []
    for user_id, group in by_user.items():
        if user_id not in states:
            continue
        end = states[user_id]
        for offset, change in enumerate(group):
            change.state = end - len(group) + 1 + offset
            log.append(
                {
                    "user_id": user_id,
                    "seq": change.state,
                    "item_id": change.item_id,
                    "kind": change.kind,
                    "at": now,
                }
            )
    if log:
        await db.mailbox_changes.insert_many(log, session=session)


async def apply_counter_deltas(
    db: Any,
    user_id: ObjectId,
    deltas: dict[CounterKey, dict[str, int]],
    session: Any,
    arrived_at: datetime | None = None,
) -> None:
    """Move the counters; ``arrived_at`` (the oldest entering view) keeps ``first_at``, the
    folder's oldest arrival, from which folder pages size their time window."""
    for (kind, name), change in deltas.items():
        if not change["total"] and not change["unread"]:
            continue
        update: dict[str, Any] = {"$inc": {"total": change["total"], "unread": change["unread"]}}
        if arrived_at is not None and change["total"] > 0:
            update["$min"] = {"first_at": arrived_at}
        await db.mailbox_counters.update_one(
            {"user_id": user_id, "kind": kind, "name": name}, update, upsert=True, session=session
        )


async def refresh_threads(db: Any, pairs: set[tuple[ObjectId, ObjectId]], session: Any) -> None:
    """Recompute each (user, thread) summary from its views: exact after any move or delete."""
    for user_id, thread_id in pairs:
        items = (
            await db.mailbox_items.find(
                {"user_id": user_id, "thread_id": thread_id},
                {
                    "folder": 1,
                    "labels": 1,
                    "read": 1,
                    "received_at": 1,
                    "from": 1,
                    "to": 1,
                    "cc": 1,
                    "subject": 1,
                },
                session=session,
            )
            .sort("received_at", 1)
            .to_list()
        )
        if not items:
            await db.threads.delete_one({"_id": thread_id, "user_id": user_id}, session=session)
            continue
        await db.threads.update_one(
            {"_id": thread_id, "user_id": user_id},
            {"$set": thread_summary(items)},
            session=session,
        )
