"""Scheduled send, undo and cancel (seed §7; CONTRACT.md ``cancelSend``).

A scheduled message (``sendAt``, or every send during the ``MAILHUB_UNDO_SECONDS`` window) is
stored whole with its recipients ``scheduled``. Two things can happen to it, and exactly one
does: *release* (its time has come: recipients become ``queued``, local ones are delivered) or
*cancel* (recipients become ``canceled`` and the Sent view turns back into a draft). Both are a
conditional update of the message's ``status`` from ``scheduled`` inside a transaction, so a
cancel racing the release either wins completely or fails with nothing changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.live_status import publish_many
from app.adapters.mongo import Mongo, in_transaction, update_and_read
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.domain.addresses import domain_of
from app.domain.changes import Change
from app.domain.errors import NotFound, ValidationError
from app.domain.folders import Folder, counter_deltas
from app.domain.outcomes import status_event
from app.domain.viewer import Viewer
from app.services.after_commit import Notifier
from app.services.mailbox.filing import apply_counter_deltas, refresh_threads
from app.services.mailbox.queries import MailboxService
from app.services.sending.accepted import deliver_locally


class SchedulingService:
    def __init__(
        self,
        *,
        mongo: Mongo,
        redis: RedisStore,
        queue: JobQueue,
        mailbox: MailboxService,
        notifier: Notifier,
        hostname: str,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.redis = redis
        self.queue = queue
        self.mailbox = mailbox
        self.notifier = notifier
        self.hostname = hostname  # the MX named in local deliveries' replies

    async def release_due(self, message_ids: list[ObjectId]) -> list[ObjectId]:
        """Hand every scheduled message among ``message_ids`` whose time has come to delivery."""
        if not message_ids:
            return []
        now = datetime.now(UTC)
        due = await self.db.messages.find(
            {"_id": {"$in": message_ids}, "status": "scheduled", "send_at": {"$lte": now}},
            {"_id": 1},
        ).to_list()
        released = []
        for doc in due:
            if await self.release(doc["_id"]):
                released.append(doc["_id"])
        return released

    async def release(self, message_id: ObjectId) -> bool:
        """Release one scheduled message if it is due; False if it was not (or already was)."""
        now = datetime.now(UTC)

        async def work(session: Any) -> tuple[list[dict[str, Any]], list[Change]] | None:
            result = await self.db.messages.update_one(
                {"_id": message_id, "status": "scheduled", "send_at": {"$lte": now}},
                {"$set": {"status": "queued", "released_at": now}},
                session=session,
            )
            if result.modified_count != 1:
                return None
            message = await self.db.messages.find_one({"_id": message_id}, session=session)
            assert message is not None  # updated a moment ago in this transaction
            recipients = await self.db.recipients.find(
                {"message_id": message_id, "delivery_status": "scheduled"}, session=session
            ).to_list()
            # The queue lifetime counts from release, not from when the send was scheduled.
            await self.db.recipients.update_many(
                {"message_id": message_id, "delivery_status": "scheduled"},
                {
                    "$set": {
                        "delivery_status": "queued",
                        "next_attempt_at": now,
                        "queued_at": now,
                        "updated_at": now,
                    }
                },
                session=session,
            )
            changes = await deliver_locally(
                self.db, message, recipients, now, session, hostname=self.hostname
            )
            return await self.db.recipients.find(
                {"message_id": message_id}, session=session
            ).to_list(), changes

        outcome = await in_transaction(self.mongo, work)
        if outcome is None:
            return False
        recipients, changes = outcome
        await self.notifier.committed(changes)
        await publish_many(self.redis, [status_event(message_id, r) for r in recipients])
        for domain in sorted(
            {
                r["domain"]
                for r in recipients
                if r["delivery_status"] == "queued" and not r.get("local_user_id")
            }
        ):
            await self.queue.enqueue(
                "deliver_domain", str(message_id), domain, job_id=f"deliver:{message_id}:{domain}"
            )
        return True

    async def cancel_send(self, viewer: Viewer, item_id: str) -> dict[str, Any]:
        """Cancel a send not yet handed to delivery; its Sent view moves to Drafts."""
        item = await self.mailbox.get_item(viewer, item_id)
        if item is None or item.get("role") != "sent":
            raise NotFound(f"no sent message with id {item_id}")
        now = datetime.now(UTC)
        message_id = item["message_id"]
        parent = await self._parent_item(viewer, message_id)

        async def work(session: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            result = await self.db.messages.update_one(
                {"_id": message_id, "sender_user_id": viewer.user_id, "status": "scheduled"},
                {
                    "$set": {
                        "status": "draft",
                        "canceled_at": now,
                        "updated_at": now,
                        "draft_in_reply_to_item": parent,
                    }
                },
                session=session,
            )
            if result.modified_count != 1:
                raise ValidationError.on("id", "this message has already been handed to delivery")
            recipients = await self.db.recipients.find(
                {"message_id": message_id, "delivery_status": "scheduled"}, session=session
            ).to_list()
            await self.db.recipients.update_many(
                {"message_id": message_id, "delivery_status": "scheduled"},
                {"$set": {"delivery_status": "canceled", "updated_at": now}},
                session=session,
            )
            sender_domain = domain_of(viewer.email)
            if recipients:
                await self.db.delivery_events.insert_many(
                    [
                        {
                            "message_id": message_id,
                            "recipient": r["address"],
                            "recipient_id": r["_id"],
                            "event_type": "canceled",
                            "occurred_at": now,
                            "sender_user_id": viewer.user_id,
                            "sender_domain": sender_domain,
                            "metadata": {},
                        }
                        for r in recipients
                    ],
                    session=session,
                )
            draft = await update_and_read(
                self.db.mailbox_items,
                {"_id": item["_id"], "user_id": viewer.user_id, "role": "sent"},
                {
                    "$set": {"role": "draft", "folder": Folder.DRAFTS.value, "read": True},
                    "$inc": {"version": 1},
                },
                session,
            )
            if draft is None:
                raise NotFound(f"no sent message with id {item_id}")
            await apply_counter_deltas(
                self.db, viewer.user_id, counter_deltas(item, draft), session
            )
            await refresh_threads(self.db, {(viewer.user_id, draft["thread_id"])}, session)
            canceled = [{**r, "delivery_status": "canceled", "updated_at": now} for r in recipients]
            return draft, canceled

        draft, canceled = await in_transaction(self.mongo, work)
        await self.notifier.committed(
            [
                Change(
                    viewer.user_id,
                    draft["_id"],
                    "updated",
                    draft["thread_id"],
                    (item["folder"], draft["folder"]),
                    draft,
                )
            ]
        )
        await publish_many(self.redis, [status_event(message_id, r) for r in canceled])
        return draft

    async def _parent_item(self, viewer: Viewer, message_id: ObjectId) -> ObjectId | None:
        """The viewer's view of the message this one replies to, so sendDraft threads again."""
        message = await self.db.messages.find_one({"_id": message_id}, {"in_reply_to": 1})
        parent_id = (message or {}).get("in_reply_to")
        if not parent_id:
            return None
        parent = await self.db.messages.find_one({"rfc822_message_id": parent_id}, {"_id": 1})
        if parent is None:
            return None
        view = await self.db.mailbox_items.find_one(
            {"user_id": viewer.user_id, "message_id": parent["_id"]}, {"_id": 1}
        )
        return view["_id"] if view else None
