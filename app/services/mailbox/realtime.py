"""Realtime: publish committed mailbox changes per user, and resumable sync (`changes`).

Events travel over Redis pub/sub on per-user channels, so a change made by any process (api,
mx, worker) reaches that user's websockets on every api replica and no one else's. Events
only say *what* changed (item id, kind, state); subscribers read the item itself from
MongoDB, scoped to their viewer, so nothing private crosses a channel it should not.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.adapters.pubsub import Listener, PubSubHub
from app.domain.changes import Change
from app.domain.errors import NotFound, ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer

MAX_CHANGES = 5000

__all__ = ["CannotCalculateChanges", "ChangeSet", "Listener", "RealtimeService"]


@dataclass(frozen=True)
class ChangeSet:
    created: list[str]
    updated: list[str]
    deleted: list[str]
    new_state: str


class CannotCalculateChanges(Exception):
    """The state is older than the retained change log: the client must reload."""


class RealtimeService:
    def __init__(self, mongo: Mongo, hub: PubSubHub) -> None:
        self.db = mongo.db
        self.hub = hub

    async def publish_changes(self, changes: list[Change]) -> None:
        """Notifier listener: one small event per committed change, to its owner only; all of
        a commit's events in one round trip to Redis."""
        await self.hub.publish_many(
            [
                (
                    str(c.user_id),
                    {
                        "type": "mailbox",
                        "kind": c.kind,
                        "itemId": str(c.item_id),
                        "state": str(c.state) if c.state is not None else None,
                        "folders": list(c.folders),
                    },
                )
                for c in changes
            ]
        )

    async def publish_delivery(
        self, sender_user_id: ObjectId, message_id: ObjectId, recipient: dict[str, Any]
    ) -> None:
        await self.hub.publish(
            str(sender_user_id),
            {
                "type": "delivery",
                "messageId": str(message_id),
                "recipientId": str(recipient["_id"]),
            },
        )

    async def current_state(self, viewer: Viewer) -> str:
        user = await self.db.users.find_one({"_id": viewer.user_id}, {"state": 1})
        return str(int((user or {}).get("state") or 0))

    async def changes(self, viewer: Viewer, since: str) -> ChangeSet:
        """Exactly the item ids created/updated/deleted after ``since`` (JMAP /changes style)."""
        try:
            since_seq = int(since)
            if since_seq < 0:
                raise ValueError
        except ValueError:
            raise ValidationError.on(
                "since", "since must be a state returned by the server"
            ) from None
        current = int(await self.current_state(viewer))
        if since_seq > current:
            raise ValidationError.on("since", "since is newer than the current state")
        if since_seq == current:
            return ChangeSet([], [], [], str(current))
        docs = (
            await self.db.mailbox_changes.find(
                {"user_id": viewer.user_id, "seq": {"$gt": since_seq}}
            )
            .sort("seq", 1)
            .limit(MAX_CHANGES + 1)
            .to_list()
        )
        # The log is trimmed oldest-first (TTL); a gap right after `since` means it was trimmed.
        if not docs or docs[0]["seq"] != since_seq + 1 or len(docs) > MAX_CHANGES:
            raise CannotCalculateChanges(
                "that state is older than the retained change log; reload the mailbox"
            )
        first_kind: dict[ObjectId, str] = {}
        last_kind: dict[ObjectId, str] = {}
        for d in docs:
            first_kind.setdefault(d["item_id"], d["kind"])
            last_kind[d["item_id"]] = d["kind"]
        created, updated, deleted = [], [], []
        for item_id, first in first_kind.items():
            last = last_kind[item_id]
            if first == "created" and last == "deleted":
                continue  # born and gone while the client was away: nothing to tell
            if last == "deleted":
                deleted.append(str(item_id))
            elif first == "created":
                created.append(str(item_id))
            else:
                updated.append(str(item_id))
        return ChangeSet(created, updated, deleted, str(docs[-1]["seq"]))

    # --- subscriptions (schema/realtime.py) -------------------------------------------------

    def listen(
        self, viewer: Viewer, *, coalesce: bool = False
    ) -> AbstractAsyncContextManager[Listener]:
        """The viewer's own event channel, for as long as the subscription lasts."""
        return self.hub.listen(str(viewer.user_id), coalesce=coalesce)

    async def sent_message_id(self, viewer: Viewer, message_id: str) -> ObjectId:
        """The id of a message the viewer sent; NotFound for anything else (another user's
        message behaves exactly like one that does not exist)."""
        oid = parse_object_id(message_id)
        owned = oid is not None and await self.db.mailbox_items.count_documents(
            {"user_id": viewer.user_id, "message_id": oid, "role": "sent"}, limit=1
        )
        if not owned:
            raise NotFound(f"no sent message with id {message_id}")
        assert oid is not None
        return oid

    async def recipient_of(self, message_id: ObjectId, recipient_id: str) -> dict[str, Any] | None:
        """One recipient row of a message (a delivery event names it); None if it is not one."""
        rid = parse_object_id(recipient_id)
        if rid is None:
            return None
        return await self.db.recipients.find_one({"_id": rid, "message_id": message_id})
