"""Mailbox reads (seed §11): the folder list, folder pages, threads, one message.

State changes and deletion are in changes.py.

Every query filters on the viewer's ``user_id`` first; an id that belongs to someone else is
indistinguishable from one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.config import Settings
from app.domain.cursors import Cursor, decode_cursor, encode_cursor
from app.domain.errors import NotFound, ValidationError
from app.domain.folders import Folder, check_label
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer

MAX_PAGE = 100
WINDOW_MIN = 60.0  # seconds
DEFAULT_WINDOW = 86400.0
WINDOW_GROWTH = 8
WINDOW_ROUNDS = 6
MAX_WINDOW = 60 * 365 * 86400.0  # beyond this, drop the bound


@dataclass(frozen=True)
class Listing:
    """A newest-first keyset listing: which collection, ordered by which time field."""

    collection: str
    time_field: str
    folder_field: str  # views have one folder; threads list every folder they have views in
    span_field: str  # on the folder counter: how far back from now the last first page reached
    cursor_kind: str


ITEMS = Listing("mailbox_items", "received_at", "folder", "page_span", "m")
# A thread is in a folder when any of its views is, so its latest_at is never older than the
# folder's first arrival: the same counter bounds both listings.
THREADS = Listing("threads", "latest_at", "folders", "thread_page_span", "t")


@dataclass(frozen=True)
class Page:
    nodes: list[dict[str, Any]]
    cursors: list[str]
    has_next: bool
    total: int | None = None

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def check_page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise ValidationError.on("first", f"first must be between 1 and {MAX_PAGE}")
    return first


class MailboxService:
    """What a viewer reads of their mailbox."""

    def __init__(self, mongo: Mongo, settings: Settings) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.settings = settings
        self.cursor_key = (
            settings.secret_key.get_secret_value() if settings.secret_key else "dev"
        ).encode()

    async def mailboxes(self, viewer: Viewer) -> list[dict[str, Any]]:
        """Every folder (always) and every label in use, with total and unread counts."""
        docs = await self.db.mailbox_counters.find({"user_id": viewer.user_id}).to_list()
        counts = {(d["kind"], d["name"]): d for d in docs}
        out = []
        for folder in Folder:
            d = counts.get(("folder", folder.value), {})
            out.append(
                {
                    "id": f"folder:{folder.value}",
                    "name": folder.value.capitalize(),
                    "folder": folder.value,
                    "is_label": False,
                    "total": max(0, d.get("total", 0)),
                    "unread": max(0, d.get("unread", 0)),
                }
            )
        for (kind, name), d in sorted(counts.items()):
            if kind == "label" and d.get("total", 0) > 0:
                out.append(
                    {
                        "id": f"label:{name}",
                        "name": name,
                        "folder": None,
                        "is_label": True,
                        "total": d["total"],
                        "unread": max(0, d.get("unread", 0)),
                    }
                )
        return out

    async def list_items(
        self,
        viewer: Viewer,
        *,
        folder: str | None = None,
        label: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Page:
        """A keyset page of views, newest first: one indexed query whatever the mailbox size."""
        return await self._page(ITEMS, viewer, folder, label, first, after)

    async def _page(
        self,
        listing: Listing,
        viewer: Viewer,
        folder: str | None,
        label: str | None,
        first: int,
        after: str | None,
    ) -> Page:
        check_page_size(first)
        query: dict[str, Any] = {"user_id": viewer.user_id}
        if label is not None:
            query["labels"] = check_label(label, "label")
        else:
            query[listing.folder_field] = folder or Folder.INBOX.value
        cursor = decode_cursor(after, self.cursor_key, listing.cursor_kind) if after else None
        docs, known_span = await self._keyset_page(listing, viewer, query, first + 1, cursor)
        nodes = docs[:first]
        key = listing.time_field
        span = (nodes[0][key] - nodes[-1][key]).total_seconds() if nodes else None
        if cursor is None and len(docs) > first:
            # How far back from now this first page reached: the next first page's window.
            # (The page's own span is not enough: in a mailbox whose newest mail is a week
            # old, a window of twice the page's span holds nothing and has to widen.)
            reach = (datetime.now(UTC) - docs[first][key]).total_seconds()
            await self._learn_page_span(listing, viewer, query, reach, known_span)
        cursors = [
            encode_cursor(Cursor(d[key], str(d["_id"]), span), self.cursor_key, listing.cursor_kind)
            for d in nodes
        ]
        return Page(nodes, cursors, len(docs) > first)

    async def _keyset_page(
        self,
        listing: Listing,
        viewer: Viewer,
        query: dict[str, Any],
        limit: int,
        cursor: Cursor | None,
    ) -> tuple[list[dict[str, Any]], float | None]:
        """The next ``limit`` documents after ``cursor`` in (time desc, _id desc) order.

        The query is bounded below by a time window sized from the folder's density (first
        page) or from the previous page's span (cursor), widened ×8 until it holds a page.
        On MongoDB the index alone would stop after ``limit`` keys; SecantusDB (dev/test)
        sorts every match before limiting, so an unbounded query costs O(folder size). The
        window keeps a page O(page size) on both, at the price of an occasional second query.
        """
        field = listing.time_field
        sort = [(field, -1), ("_id", -1)]
        items = self.db[listing.collection]
        found: list[dict[str, Any]] = []
        upper: dict[str, Any] = {}
        known_span = None
        if cursor is not None:
            # ties with the cursor's timestamp come first: same received_at, smaller _id
            found = (
                await items.find(
                    {**query, field: cursor.at, "_id": {"$lt": parse_object_id(cursor.id)}}
                )
                .sort(sort)
                .limit(limit)
                .to_list()
            )
            if len(found) >= limit:
                return found, None
            upper = {"$lt": cursor.at}
            start = cursor.at
            window, floor = max(WINDOW_MIN, 2 * (cursor.span or 0)), None
        else:
            start = datetime.now(UTC)
            window, floor, total, known_span = await self._first_window(
                listing, viewer, query, limit
            )
            if total == 0:
                return [], known_span
        need = limit - len(found)
        for _ in range(WINDOW_ROUNDS):
            if window > MAX_WINDOW:
                break
            lower = start - timedelta(seconds=window)
            got = (
                await items.find({**query, field: {**upper, "$gte": lower}})
                .sort(sort)
                .limit(need)
                .to_list()
            )
            if len(got) >= need or (floor is not None and lower <= floor):
                return found + got, known_span
            window *= WINDOW_GROWTH
        rest = (
            await items.find({**query, field: upper} if upper else query)
            .sort(sort)
            .limit(need)
            .to_list()
        )
        return found + rest, known_span

    @staticmethod
    def _counter_key(viewer: Viewer, query: dict[str, Any]) -> dict[str, Any]:
        if "labels" in query:
            kind, name = "label", query["labels"]
        else:
            kind, name = "folder", query.get("folder") or query["folders"]
        return {"user_id": viewer.user_id, "kind": kind, "name": name}

    async def _first_window(
        self, listing: Listing, viewer: Viewer, query: dict[str, Any], limit: int
    ) -> tuple[float, datetime | None, int | None, float | None]:
        """(window seconds, oldest arrival, total) for a first page, from the folder's counter:
        how far back the last first page reached (learned), else the folder's average density."""
        doc = await self.db.mailbox_counters.find_one(
            self._counter_key(viewer, query), {"total": 1, "first_at": 1, listing.span_field: 1}
        )
        total = int((doc or {}).get("total", 0))
        first_at = (doc or {}).get("first_at")
        known = (doc or {}).get(listing.span_field)
        if known is not None:
            return max(WINDOW_MIN, 2 * float(known)), first_at, total, known
        if total <= 0 or first_at is None:
            return DEFAULT_WINDOW, None, (total if doc else None), None
        density = total / max(1.0, (datetime.now(UTC) - first_at).total_seconds())
        return max(WINDOW_MIN, 2 * limit / density), first_at, total, None

    async def _learn_page_span(
        self,
        listing: Listing,
        viewer: Viewer,
        query: dict[str, Any],
        span: float,
        known: float | None,
    ) -> None:
        """Remember how far back a first page reached, so the next one queries just that.
        A hint only: written when it is missing or off by more than 2×."""
        if known is None or not known / 2 <= span <= known * 2:
            await self.db.mailbox_counters.update_one(
                self._counter_key(viewer, query), {"$set": {listing.span_field: span}}
            )

    async def count(
        self, viewer: Viewer, *, folder: str | None = None, label: str | None = None
    ) -> int:
        """Total views in a folder or label, from the counters (no counting of items)."""
        kind, name = (
            ("label", check_label(label, "label"))
            if label is not None
            else ("folder", folder or Folder.INBOX.value)
        )
        doc = await self.db.mailbox_counters.find_one(
            {"user_id": viewer.user_id, "kind": kind, "name": name}, {"total": 1}
        )
        return max(0, int((doc or {}).get("total", 0)))

    async def get_item(self, viewer: Viewer, item_id: str) -> dict[str, Any] | None:
        oid = parse_object_id(item_id)
        if oid is None:
            return None
        return await self.db.mailbox_items.find_one({"_id": oid, "user_id": viewer.user_id})

    async def require_item(self, viewer: Viewer, item_id: str, field: str = "id") -> dict[str, Any]:
        item = await self.get_item(viewer, item_id)
        if item is None:
            raise NotFound(f"no message with id {item_id}")
        return item

    async def original_blob(self, viewer: Viewer, item_id: str) -> ObjectId:
        """The blob of the raw RFC 822 message behind one of the viewer's items ("show
        original"). Another user's item, a draft (not built until sent) or a message whose
        content was already released are all NotFound."""
        item = await self.get_item(viewer, item_id)
        if item is None or item.get("role") == "draft":
            raise NotFound(f"no message with id {item_id}")
        message = await self.db.messages.find_one({"_id": item["message_id"]}, {"raw_blob_id": 1})
        if not message or not message.get("raw_blob_id"):
            raise NotFound(f"message {item_id} has no stored original")
        return message["raw_blob_id"]  # type: ignore[no-any-return]

    async def list_threads(
        self,
        viewer: Viewer,
        *,
        folder: str | None = None,
        label: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Page:
        """Conversations with a view in the folder (or label), most recent activity first."""
        return await self._page(THREADS, viewer, folder, label, first, after)

    async def get_thread(self, viewer: Viewer, thread_id: str) -> dict[str, Any] | None:
        oid = parse_object_id(thread_id)
        if oid is None:
            return None
        return await self.db.threads.find_one({"_id": oid, "user_id": viewer.user_id})

    # --- batch loads (one round trip per kind, whatever the page size) --------------------

    async def items_of_threads(
        self, viewer: Viewer, thread_ids: list[ObjectId]
    ) -> dict[ObjectId, list[dict[str, Any]]]:
        docs = (
            await self.db.mailbox_items.find(
                {"user_id": viewer.user_id, "thread_id": {"$in": thread_ids}}
            )
            .sort([("received_at", 1), ("_id", 1)])
            .to_list()
        )
        out: dict[ObjectId, list[dict[str, Any]]] = {t: [] for t in thread_ids}
        for d in docs:
            out[d["thread_id"]].append(d)
        return out

    async def messages_by_ids(self, message_ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
        """Message content by id. Callers pass only ids taken from the viewer's own views."""
        docs = await self.db.messages.find({"_id": {"$in": message_ids}}).to_list()
        return {d["_id"]: d for d in docs}

    async def recipients_by_message(
        self, message_ids: list[ObjectId]
    ) -> dict[ObjectId, list[dict[str, Any]]]:
        docs = (
            await self.db.recipients.find({"message_id": {"$in": message_ids}})
            .sort("_id", 1)
            .to_list()
        )
        out: dict[ObjectId, list[dict[str, Any]]] = {m: [] for m in message_ids}
        for d in docs:
            out[d["message_id"]].append(d)
        return out

    async def message_status(self, viewer: Viewer, message_id: ObjectId) -> str | None:
        """The sending status of one of the viewer's messages (queued, scheduled, sent, …);
        None when it is not the viewer's message."""
        message = await self.db.messages.find_one(
            {"_id": message_id, "sender_user_id": viewer.user_id}, {"status": 1}
        )
        return message.get("status") if message else None
