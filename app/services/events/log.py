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

A document may be a bucket of events (a campaign batch's ``queued`` ones, a delivery outcome
batch's ``sent`` ones: events/buckets.py): its events are shown one by one, each with its own
id, and a cursor may point into it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.errors import ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.domain.webhooks import EVENT_TYPES, check_event_types
from app.services.events.buckets import bucket_of, expand_all

MAX_PAGE = 500
PAGE_CACHE = 16  # full pages kept (at most webhook_batch_size events each)
FIRST_WINDOW = timedelta(seconds=1)
# (sender_user_id, _id) in app/adapters/indexes.py: equality then the cursor range, in sort
# order — named, because a planner choosing (sender_user_id, occurred_at) would sort it all
LOG_INDEX = [("sender_user_id", 1), ("_id", 1)]


def _next_span(span: timedelta, found: int, missing: int) -> timedelta:
    """×8 after an empty window; after a short one, as wide as its density says the missing
    events need (a dense window as wide as an empty one would sort thousands of matches)."""
    if found == 0:
        return span * 8
    return min(span * 8, max(FIRST_WINDOW, span * (missing / found) * 1.2))


class EventLog:
    def __init__(self, mongo: Mongo, *, settle_seconds: float, retention_days: int) -> None:
        self.db = mongo.db
        self.settle = timedelta(seconds=settle_seconds)
        self.retention = timedelta(days=retention_days)
        # Full pages by (user, types, after, limit). A settled range never changes, so the first
        # ``limit`` events after a cursor are the same on every read: the endpoints of one user
        # (which move through the log in step) share each read instead of repeating it.
        self._full_pages: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._reading: dict[tuple[Any, ...], asyncio.Future[list[dict[str, Any]]]] = {}

    def settled_bound(self) -> ObjectId:
        """Ids below this are complete: nothing with a smaller id can still commit."""
        return ObjectId.from_datetime(datetime.now(UTC) - self.settle)

    def start_cursor(self) -> ObjectId:
        """A cursor that starts at "now" (a new webhook endpoint gets events from here on)."""
        return ObjectId.from_datetime(datetime.now(UTC) - self.settle)

    async def read(
        self, user_id: ObjectId, types: list[str], after: ObjectId | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` settled events of the user's outgoing mail after ``after``, id order.

        Read in id (time) windows that start small and widen while short: mongod stops after
        ``limit`` keys of the index anyway, but SecantusDB sorts every match before the limit,
        so an unbounded range would cost a replay or a lagging webhook the whole backlog on
        every page (the same reason folder pages are windowed, docs/architecture.md)."""
        wanted = list(types) if types else list(EVENT_TYPES)
        key = (user_id, tuple(wanted), after, limit)
        cached = self._full_pages.get(key)
        if cached is not None:
            return cached
        running = self._reading.get(key)
        if running is not None:  # the same read is under way (endpoints in step): share it
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._read(key, user_id, wanted, after, limit))
        self._reading[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._reading.pop(key, None)
            else:
                task.add_done_callback(lambda _: self._reading.pop(key, None))

    async def _read(
        self,
        key: tuple[Any, ...],
        user_id: ObjectId,
        wanted: list[str],
        after: ObjectId | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        end = self.settled_bound()
        if after is not None:
            lower, bound = after, "$gt"  # strictly after the cursor
        else:
            lower, bound = ObjectId.from_datetime(datetime.now(UTC) - self.retention), "$gte"
        span = FIRST_WINDOW
        # a cursor inside a bucket (a page ended there): the rest of its events come first
        out: list[dict[str, Any]] = []
        if after is not None:
            out = await self._rest_of_bucket(user_id, wanted, after, end)
        while len(out) < limit and lower < end:
            upper = min(end, ObjectId.from_datetime(lower.generation_time + span))
            query = {
                "sender_user_id": user_id,
                "_id": {bound: lower, "$lt": upper},
                "event_type": {"$in": wanted},
            }
            found = (
                await self.db.delivery_events.find(query, hint=LOG_INDEX)
                .sort("_id", 1)
                .limit(limit - len(out))
                .to_list()
            )
            # a bucket's events all fall in its own window (events/buckets.py): cut to the limit
            out += expand_all(found)
            lower, bound, span = upper, "$gte", _next_span(span, len(found), limit - len(out))
        out = out[:limit]
        if len(out) == limit and after is not None:
            self._full_pages[key] = out
            while len(self._full_pages) > PAGE_CACHE:
                self._full_pages.popitem(last=False)
        return out

    async def _rest_of_bucket(
        self, user_id: ObjectId, wanted: list[str], after: ObjectId, end: ObjectId
    ) -> list[dict[str, Any]]:
        """The events after ``after`` of the bucket holding it, if one does (and is the user's,
        of the wanted kinds): the document whose ``_id`` is ``bucket_of(after)``, one key of the
        ``_id`` index (events/buckets.py). A bucket written before its ids were made for it is
        found on the sparse index of its events' ids instead; that query names the field alone
        and no hint: SecantusDB plans it on that index (7 ms), but scans with a hint or another
        field beside it (≈ 190 ms at 20,000 events)."""
        found = await self.db.delivery_events.find({"_id": bucket_of(after)}).to_list()
        found = [d for d in found if "events" in d and d["_id"] <= after <= d["last_id"]]
        if not found:
            found = await self.db.delivery_events.find({"event_ids": after}).to_list()
        mine = [d for d in found if d["sender_user_id"] == user_id and d["event_type"] in wanted]
        return [e for e in expand_all(mine) if after < e["_id"] < end]

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

    async def quiet_until(
        self, user_id: ObjectId, types: list[str], after: ObjectId | None
    ) -> ObjectId | None:
        """None if there are events after ``after``; else a bound below which there are none
        (settled, so none can still appear): a reader may move its cursor up to it, which
        keeps its next reads to a short window instead of the whole quiet stretch."""
        bound = self.settled_bound()
        if await self.read(user_id, types, after, 1):
            return None
        return bound

    async def expire(self) -> int:
        """Delete events recorded longer ago than the retention
        (``MAILHUB_EVENT_RETENTION_DAYS``): an ``_id`` range (an event's id is made when it is
        recorded), so no index of its own on ``occurred_at``."""
        cutoff = ObjectId.from_datetime(datetime.now(UTC) - self.retention)
        result = await self.db.delivery_events.delete_many({"_id": {"$lt": cutoff}})
        return int(result.deleted_count)
