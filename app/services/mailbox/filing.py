"""Filing: turn one stored message into per-user mailbox views, threaded and counted.

Used by local sends, inbound mail (the MX) and DSNs, always inside the caller's transaction,
so a message, its views, its threads and the counters change together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import ReturnDocument
from app.domain.changes import Change
from app.domain.conversations import may_join_by_subject, thread_lookup_ids
from app.domain.folders import CounterKey, counter_deltas, merge_deltas

THREAD_SUBJECT_WINDOW_DAYS = 60
MAX_PARTICIPANTS = 25
SUMMARY_FIELDS = ("from", "to", "cc", "subject", "snippet", "has_attachments", "size")


@dataclass(frozen=True)
class ViewSpec:
    """One mailbox view to create for one user."""

    user_id: ObjectId
    role: str  # sent | received | draft
    folder: str
    read: bool = False
    labels: tuple[str, ...] = ()
    dedupe_key: str | None = None
    spam: dict[str, Any] | None = None


async def record_changes(db: Any, changes: list[Change], session: Any) -> None:
    """Append changes to the owners' change logs, inside the caller's transaction.

    Each user has a monotonically increasing ``state``; every change gets the next value, so
    a client that saw state N asks ``changes(since: N)`` and gets exactly what it missed.
    """
    by_user: dict[ObjectId, list[Change]] = {}
    for change in changes:
        by_user.setdefault(change.user_id, []).append(change)
    now = datetime.now(UTC)
    for user_id, group in by_user.items():
        user = await db.users.find_one_and_update(
            {"_id": user_id},
            {"$inc": {"state": len(group)}},
            projection={"state": 1},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if user is None:
            continue  # no such user (deleted meanwhile): nobody to sync
        end = int(user["state"])
        for offset, change in enumerate(group):
            change.state = end - len(group) + 1 + offset
        await db.mailbox_changes.insert_many(
            [
                {
                    "user_id": user_id,
                    "seq": c.state,
                    "item_id": c.item_id,
                    "kind": c.kind,
                    "at": now,
                }
                for c in group
            ],
            session=session,
        )


def summary_of(message: dict[str, Any]) -> dict[str, Any]:
    """The denormalized fields a folder page shows without reading the message."""
    return {k: message.get(k) for k in SUMMARY_FIELDS}


def _participants(message: dict[str, Any]) -> list[dict[str, Any]]:
    people = [message.get("from")] + list(message.get("to") or []) + list(message.get("cc") or [])
    return [p for p in people if p and p.get("email")]


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


async def _resolve_thread(
    db: Any, user_id: ObjectId, message: dict[str, Any], now: datetime, session: Any
) -> ObjectId:
    """Header-first threading (seed §12, RFC 8621 §3); subject fallback only without headers."""
    refs = thread_lookup_ids(message.get("in_reply_to"), message.get("references") or ())
    own = message.get("rfc822_message_id")
    lookup = ([own] if own else []) + [r for r in refs if r != own]
    subject_key = message.get("normalized_subject") or ""
    if lookup:
        found = await db.thread_refs.find(
            {"user_id": user_id, "rfc822_id": {"$in": lookup}}, session=session
        ).to_list()
        by_id = {d["rfc822_id"]: d["thread_id"] for d in found}
        for ref in lookup:
            if ref not in by_id:
                continue
            thread_id = by_id[ref]
            if ref == own:
                return thread_id  # a reply that arrived first already made this thread
            thread = await db.threads.find_one(
                {"_id": thread_id}, {"normalized_subject": 1}, session=session
            )
            thread_subject = (thread or {}).get("normalized_subject") or ""
            # RFC 8621 §3: a changed subject starts a new conversation even when it replies.
            if not subject_key or not thread_subject or thread_subject == subject_key:
                return thread_id
            break
    if not refs and subject_key:
        people = {p["email"].casefold() for p in _participants(message)}
        candidates = (
            await db.threads.find(
                {"user_id": user_id, "normalized_subject": subject_key},
                {"participant_keys": 1, "latest_at": 1},
                session=session,
            )
            .sort("latest_at", -1)
            .limit(5)
            .to_list()
        )
        for thread in candidates:
            age = (now - thread["latest_at"]).days if thread.get("latest_at") else 0
            if age <= THREAD_SUBJECT_WINDOW_DAYS and may_join_by_subject(
                has_reference_headers=False,
                subject_key=subject_key,
                thread_participants=set(thread.get("participant_keys") or ()),
                participants=people,
            ):
                return thread["_id"]
    thread_id = ObjectId()
    await db.threads.insert_one(
        {
            "_id": thread_id,
            "user_id": user_id,
            "normalized_subject": subject_key,
            "subject": message.get("subject") or "",
            "latest_at": now,
            "message_count": 0,
            "unread_count": 0,
            "folders": [],
            "labels": [],
            "participants": [],
            "participant_keys": [],
            "created_at": now,
        },
        session=session,
    )
    return thread_id


async def _register_refs(
    db: Any, user_id: ObjectId, thread_id: ObjectId, message: dict[str, Any], session: Any
) -> None:
    # Registering the ids a message *refers to* lets a parent that arrives later find the
    # thread its reply already started.
    ids = [message.get("rfc822_message_id")] + list(
        thread_lookup_ids(message.get("in_reply_to"), message.get("references") or ())
    )
    for rfc822_id in dict.fromkeys(i for i in ids if i):
        await db.thread_refs.update_one(
            {"user_id": user_id, "rfc822_id": rfc822_id},
            {"$setOnInsert": {"thread_id": thread_id}},
            upsert=True,
            session=session,
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
        participants: dict[str, dict[str, Any]] = {}
        for item in items:
            for person in _participants(item):
                participants.setdefault(person["email"].casefold(), person)
        await db.threads.update_one(
            {"_id": thread_id, "user_id": user_id},
            {
                "$set": {
                    "message_count": len(items),
                    "unread_count": sum(1 for i in items if not i.get("read")),
                    "latest_at": items[-1]["received_at"],
                    "subject": items[-1].get("subject") or "",
                    "folders": sorted({i["folder"] for i in items}),
                    "labels": sorted({label for i in items for label in i.get("labels") or ()}),
                    "participants": list(participants.values())[:MAX_PARTICIPANTS],
                    "participant_keys": list(participants)[:MAX_PARTICIPANTS],
                }
            },
            session=session,
        )


async def file_message(
    db: Any, message: dict[str, Any], views: list[ViewSpec], *, received_at: datetime, session: Any
) -> tuple[list[dict[str, Any]], list[Change]]:
    """Create the views of ``message`` for each spec; returns (items, changes)."""
    items: list[dict[str, Any]] = []
    changes: list[Change] = []
    touched: set[tuple[ObjectId, ObjectId]] = set()
    for spec in views:
        thread_id = await _resolve_thread(db, spec.user_id, message, received_at, session)
        item = {
            "_id": ObjectId(),
            "user_id": spec.user_id,
            "message_id": message["_id"],
            "role": spec.role,
            "thread_id": thread_id,
            "folder": spec.folder,
            "labels": list(spec.labels),
            "read": spec.read,
            "starred": False,
            "received_at": received_at,
            "version": 1,
            **summary_of(message),
        }
        if spec.dedupe_key:
            item["dedupe_key"] = spec.dedupe_key
        if spec.spam is not None:
            item["spam"] = spec.spam
        await db.mailbox_items.insert_one(item, session=session)
        await _register_refs(db, spec.user_id, thread_id, message, session)
        deltas: dict[CounterKey, dict[str, int]] = {}
        merge_deltas(deltas, counter_deltas(None, item))
        await apply_counter_deltas(db, spec.user_id, deltas, session, arrived_at=received_at)
        touched.add((spec.user_id, thread_id))
        items.append(item)
        changes.append(
            Change(spec.user_id, item["_id"], "created", thread_id, (item["folder"],), item)
        )
    await refresh_threads(db, touched, session)
    await record_changes(db, changes, session)
    return items, changes
