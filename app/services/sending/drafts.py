"""Drafts (seed §7): save, delete, and send one (the draft becomes the sent message).

A draft is a ``messages`` document with status ``draft`` and one Drafts view of its author.
Only the addresses must parse while it is a draft; the send checks everything else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction, update_and_read
from app.config import Settings
from app.domain.changes import Change
from app.domain.errors import NotFound
from app.domain.folders import Folder, counter_deltas
from app.domain.mime import check_header_value
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.mailbox.filing import (
    ViewSpec,
    apply_counter_deltas,
    file_message,
    record_changes,
    refresh_threads,
    summary_of,
)
from app.services.mailbox.queries import MailboxService
from app.services.sending.attachments import AttachmentService
from app.services.sending.compose import (
    DRAFT_FIELDS,
    Composition,
    checked_body_size,
    composition_of_draft,
    content_fields,
    parse_recipients,
    patch_draft,
    references_after,
    sender_address,
)
from app.services.sending.send import SendingService


class DraftService:
    def __init__(
        self,
        *,
        mongo: Mongo,
        accounts: AccountService,
        attachments: AttachmentService,
        mailbox: MailboxService,
        notifier: Notifier,
        settings: Settings,
        sending: SendingService,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.accounts = accounts
        self.attachments = attachments
        self.mailbox = mailbox
        self.notifier = notifier
        self.settings = settings
        self.sending = sending  # send_draft sends the draft and removes it in one transaction

    async def save_draft(
        self,
        viewer: Viewer,
        draft_id: str | None,
        c: Composition,
        present: frozenset[str] = DRAFT_FIELDS,
    ) -> dict[str, Any]:
        """Create or update a draft. Addresses must parse; nothing else is required yet.

        Updating (``draft_id``) changes only the fields in ``present`` (the ones the client
        sent; a cleared one arrives empty) and keeps the rest of the saved draft."""
        draft_item = None
        if draft_id is not None:
            draft_item = await self._draft_item(viewer, draft_id)
            saved = await self.db.messages.find_one(
                {"_id": draft_item["message_id"], "status": "draft"}
            )
            if saved is None:
                raise NotFound(f"no draft with id {draft_id}")
            c = patch_draft(composition_of_draft(saved), c, present)
        now = datetime.now(UTC)
        sender = await sender_address(self.accounts, viewer, c.from_)
        recipients = parse_recipients(c)
        check_header_value(c.subject or "", "subject")
        checked_body_size(c, self.settings.max_body_bytes)
        uploads = await self.attachments.owned_ready(viewer, c.attachment_ids)
        parent = (
            await self.mailbox.require_item(viewer, c.in_reply_to, "inReplyTo")
            if c.in_reply_to
            else None
        )
        fields = content_fields(sender, recipients, c.subject or "", c.text, c.html, uploads)
        fields.update(
            {
                "draft_in_reply_to_item": parent["_id"] if parent else None,
                "draft_text_given": c.text is not None,
                "updated_at": now,
            }
        )
        if parent:
            parent_msg = await self.db.messages.find_one({"_id": parent["message_id"]}) or {}
            fields["in_reply_to"] = parent_msg.get("rfc822_message_id")
            fields["references"] = references_after(parent_msg)

        if draft_item is None:
            message = {
                "_id": ObjectId(),
                "sender_user_id": viewer.user_id,
                "direction": "outbound",
                "status": "draft",
                "created_at": now,
                "rfc822_message_id": None,
                "in_reply_to": None,
                "references": [],
                **fields,
            }

            async def create(session: Any) -> tuple[dict[str, Any], list[Change]]:
                await self.db.messages.insert_one(message, session=session)
                items, changes = await file_message(
                    self.db,
                    message,
                    [ViewSpec(viewer.user_id, "draft", Folder.DRAFTS.value, read=True)],
                    received_at=now,
                    session=session,
                )
                return items[0], changes

            item, changes = await in_transaction(self.mongo, create)
        else:
            existing = draft_item

            async def update(session: Any) -> tuple[dict[str, Any], list[Change]]:
                await self.db.messages.update_one(
                    {"_id": existing["message_id"], "status": "draft"},
                    {"$set": fields},
                    session=session,
                )
                summary = summary_of(fields)
                updated = await update_and_read(
                    self.db.mailbox_items,
                    {"_id": existing["_id"]},
                    {"$set": {**summary, "received_at": now}, "$inc": {"version": 1}},
                    session,
                )
                if updated is None:  # deleted meanwhile (another tab): nothing is changed
                    raise NotFound(f"no draft with id {existing['_id']}")
                changes = [
                    Change(
                        viewer.user_id,
                        updated["_id"],
                        "updated",
                        updated["thread_id"],
                        (Folder.DRAFTS.value,),
                        updated,
                    )
                ]
                await record_changes(self.db, changes, session)
                return updated, changes

            item, changes = await in_transaction(self.mongo, update)
        await self.db.attachments.update_many(
            {"_id": {"$in": [a["_id"] for a in uploads]}},
            {"$addToSet": {"message_ids": item["message_id"]}, "$unset": {"expires_at": ""}},
        )
        await self.notifier.committed(changes)
        return item

    async def delete_draft(self, viewer: Viewer, draft_id: str) -> list[str]:
        item = await self._draft_item(viewer, draft_id)

        async def work(session: Any) -> list[Change]:
            return await self._remove_draft(viewer, item, session)

        changes = await in_transaction(self.mongo, work)
        await self.notifier.committed(changes)
        await self.notifier.content_released([item["message_id"]])
        return [str(item["_id"])]

    async def send_draft(self, viewer: Viewer, draft_id: str) -> dict[str, Any]:
        """The draft becomes the sent message; the Drafts view goes, in the same transaction."""
        item = await self._draft_item(viewer, draft_id)
        draft = await self.db.messages.find_one({"_id": item["message_id"]})
        if draft is None:
            raise NotFound(f"no draft with id {draft_id}")
        composition = composition_of_draft(draft)

        async def remove_draft(session: Any) -> list[Change]:
            return await self._remove_draft(viewer, item, session)

        sent = await self.sending.send_email(viewer, composition, also_in_transaction=remove_draft)
        await self.notifier.content_released([item["message_id"]])
        return sent

    async def _draft_item(self, viewer: Viewer, draft_id: str) -> dict[str, Any]:
        item = await self.mailbox.get_item(viewer, draft_id)
        if item is None or item.get("role") != "draft":
            raise NotFound(f"no draft with id {draft_id}")
        return item

    async def _remove_draft(
        self, viewer: Viewer, item: dict[str, Any], session: Any
    ) -> list[Change]:
        result = await self.db.mailbox_items.delete_one(
            {"_id": item["_id"], "user_id": viewer.user_id, "role": "draft"}, session=session
        )
        if result.deleted_count != 1:
            raise NotFound(f"no draft with id {item['_id']}")
        await apply_counter_deltas(self.db, viewer.user_id, counter_deltas(item, None), session)
        await refresh_threads(self.db, {(viewer.user_id, item["thread_id"])}, session)
        changes = [
            Change(viewer.user_id, item["_id"], "deleted", item["thread_id"], (item["folder"],))
        ]
        await record_changes(self.db, changes, session)
        return changes
