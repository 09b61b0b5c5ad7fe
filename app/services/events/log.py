"""The event log: the facts delivery, bounces, complaints and sends already record in
``delivery_events``, read per sender as an append-only, cursor-paged, replayable log.

One source of truth: no second copy. The cursor is an event's id (an ObjectId, so the log is
in id order). ObjectIds are made by the writing process before its transaction commits, so an
event with a smaller id can become visible *after* one with a larger id (two processes, or
a slow transaction). A reader that has moved past an id must never miss such an event, so the
log only shows events whose id is older than the settle window
(``MAILHUB_EVENT_SETTLE_SECONDS``, default 10 s): every transaction that writes events commits
well within it (they are bounded by the database timeouts, seconds), so once an id range is
readable it is complete and reads of it are repeatable. The price is that an event appears in
the log (and in webhooks) up to the window (+1 s, ObjectId's resolution) after it happened.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.errors import ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.domain.webhooks import EVENT_TYPES, check_event_types

MAX_PAGE = 500


class EventLog:
    def __init__(self, mongo: Mongo, *, settle_seconds: float, retention_days: int) -> None:
        self.db = mongo.db
        self.settle = timedelta(seconds=settle_seconds)
        self.retention = timedelta(days=retention_days)

    def settled_bound(self) -> ObjectId:
        """Ids below this are complete: nothing with a smaller id can still commit."""
        return ObjectId.from_datetime(datetime.now(UTC) - self.settle)

    def start_cursor(self) -> ObjectId:
        """A cursor that starts at "now" (a new webhook endpoint gets events from here on)."""
        return ObjectId.from_datetime(datetime.now(UTC) - self.settle)

    async def read(
        self, user_id: ObjectId, types: list[str], after: ObjectId | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` settled events of the user's outgoing mail after ``after``, id order."""
        ids: dict[str, Any] = {"$lt": self.settled_bound()}
        if after is not None:
            ids["$gt"] = after
        wanted = list(types) if types else list(EVENT_TYPES)
        query = {"sender_user_id": user_id, "_id": ids, "event_type": {"$in": wanted}}
        return (  # type: ignore[no-any-return]
            await self.db.delivery_events.find(query).sort("_id", 1).limit(limit).to_list()
        )

    async def page(
        self, viewer: Viewer, types: list[str] | None, after: str | None, first: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """``events(types, after, first)``: (events, has_next_page)."""
        if not 1 <= first <= MAX_PAGE:
            raise ValidationError.on("first", f"first must be 1 to {MAX_PAGE}")
        wanted = check_event_types(list(types), "types") if types else []
        cursor = None
        if after:
            cursor = parse_object_id(after)
            if cursor is None:
                raise ValidationError.on("after", "not a cursor of this log (an event id)")
        docs = await self.read(viewer.user_id, wanted, cursor, first + 1)
        return docs[:first], len(docs) > first

    async def has_after(self, user_id: ObjectId, types: list[str], after: ObjectId | None) -> bool:
        return bool(await self.read(user_id, types, after, 1))

    async def expire(self) -> int:
        """Delete events older than the retention (``MAILHUB_EVENT_RETENTION_DAYS``)."""
        cutoff = datetime.now(UTC) - self.retention
        result = await self.db.delivery_events.delete_many({"occurred_at": {"$lt": cutoff}})
        return int(result.deleted_count)
