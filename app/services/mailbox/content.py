"""Message content: bodies kept inline when small, in the blob store when large, and garbage
collection of content (message, raw MIME, attachment blobs) that no view references any more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo, in_transaction, update_and_read
from app.domain.attachments import attachment_ref
from app.domain.outcomes import UNFINISHED
from app.domain.parsing import ParsedAttachment

log = structlog.get_logger(__name__)

INLINE_BODY_LIMIT = 256 * 1024
# A received attachment up to this size (decoded) is stored only inside the raw MIME it came
# in; a larger one also gets a blob of its own, so its download streams it instead of reading
# and parsing the whole message (docs/inbound.md, "Attachments").
ATTACHMENT_IN_RAW_MAX = 8 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedAttachments:
    """What a received (or IMAP-appended) message's attachments are stored as."""

    docs: list[dict[str, Any]]  # the ``attachments`` documents
    blobs: list[tuple[ObjectId, bytes, str, dict[str, Any]]]  # (id, data, filename, metadata)

    @property
    def refs(self) -> list[dict[str, Any]]:
        """The message document's ``attachments``."""
        return [attachment_ref(doc) for doc in self.docs]


def received_attachments(
    attachments: Sequence[ParsedAttachment],
    message_id: ObjectId,
    raw_blob_id: ObjectId,
    offset: int,
    scan_status: str,
) -> ReceivedAttachments:
    """The documents of a message's parsed attachments. Up to ``ATTACHMENT_IN_RAW_MAX`` an
    attachment has no blob of its own: ``in_raw`` says where it is (the raw blob, the offset
    where the message as parsed starts in it, its index in ``parse_message().attachments``),
    and ``AttachmentService.content`` decodes it from there. A larger one gets a blob (the
    caller writes ``blobs`` with the message)."""
    docs, blobs = [], []
    for index, a in enumerate(attachments):
        where: dict[str, Any] = {
            "in_raw": {"blob_id": raw_blob_id, "offset": offset, "index": index}
        }
        if len(a.data) > ATTACHMENT_IN_RAW_MAX:
            blob_id = ObjectId()
            blobs.append((blob_id, a.data, a.filename, {"kind": "attachment"}))
            where = {"blob_id": blob_id}
        doc = {
            "_id": ObjectId(),
            "owner_user_id": None,
            **where,
            "filename": a.filename,
            "content_type": a.content_type,
            "declared_content_type": a.content_type,
            "size": len(a.data),
            "sha256": hashlib.sha256(a.data).hexdigest(),
            "status": "ready",
            "scan_status": scan_status,
            "message_ids": [message_id],
            "content_id": a.content_id,
            "inline": a.inline,
        }
        docs.append(doc)
    return ReceivedAttachments(docs, blobs)


class ContentService:
    def __init__(self, mongo: Mongo, blobs: BlobStore) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.blobs = blobs

    async def body_fields(self, text: str | None, html: str | None) -> dict[str, Any]:
        """Fields for a message document: inline below the limit, else a blob reference."""
        out: dict[str, Any] = {}
        for name, value in (("text_body", text), ("html_body", html)):
            if value is not None and len(value) > INLINE_BODY_LIMIT:
                out[name] = None
                out[name.replace("_body", "_blob_id")] = await self.blobs.put(
                    value.encode("utf-8"), filename=f"{name}.txt", metadata={"kind": name}
                )
            else:
                out[name] = value
        return out

    async def text_body(self, message: dict[str, Any]) -> str | None:
        if message.get("text_blob_id"):
            return (await self.blobs.get(message["text_blob_id"])).decode("utf-8", "replace")
        return message.get("text_body")  # type: ignore[no-any-return]

    async def html_body(self, message: dict[str, Any]) -> str | None:
        if message.get("html_blob_id"):
            return (await self.blobs.get(message["html_blob_id"])).decode("utf-8", "replace")
        return message.get("html_body")  # type: ignore[no-any-return]

    async def collect(self, message_ids: list[ObjectId]) -> int:
        """Delete messages no view references and no delivery still needs; returns how many."""
        removed = 0
        for message_id in message_ids:
            if await self.db.mailbox_items.count_documents({"message_id": message_id}, limit=1):
                continue
            if await self.db.recipients.count_documents(
                {"message_id": message_id, "delivery_status": {"$in": list(UNFINISHED)}}, limit=1
            ):
                continue
            # read, then delete: only the collector whose delete removed it releases its
            # content. (Not find_one_and_delete: SecantusDB runs findAndModify's remove as a
            # scan of the collection, 0.4 s at 30,000 messages against 2.5 ms for these two,
            # and a sweep of 500 timed out with 100,000 campaign messages stored.)
            message = await self.db.messages.find_one({"_id": message_id})
            if message is None:
                continue
            if not (await self.db.messages.delete_one({"_id": message_id})).deleted_count:
                continue
            removed += 1
            for key in ("raw_blob_id", "text_blob_id", "html_blob_id"):
                if message.get(key):
                    await self.blobs.delete(message[key])
            for attachment in message.get("attachments") or []:
                await self._release_attachment(attachment, message_id)
        return removed

    async def _release_attachment(self, attachment: dict[str, Any], message_id: ObjectId) -> None:
        # The pull and the read of what is left, in one transaction: the same answer as a
        # findAndModify, which SecantusDB runs as a scan of the whole collection even by _id
        # (175 ms at 30,000 attachments against 0.7 ms; docs/benchmarks.md).
        doc = await in_transaction(
            self.mongo,
            lambda session: update_and_read(
                self.db.attachments,
                {"_id": attachment["id"]},
                {"$pull": {"message_ids": message_id}},
                session,
            ),
        )
        if doc is None:
            if attachment.get("blob_id"):
                await self.blobs.delete(attachment["blob_id"])
            return
        if not doc.get("message_ids") and not doc.get("expires_at"):
            # referenced once, now by nothing: no upload is waiting to be used. The blob goes
            # only with the document: a message that took the attachment up in between keeps
            # both.
            gone = await self.db.attachments.delete_one(
                {"_id": doc["_id"], "message_ids": {"$size": 0}}
            )
            if gone.deleted_count and doc.get("blob_id"):  # (a received one's is its raw)
                await self.blobs.delete(doc["blob_id"])

    async def sweep_expired_uploads(self, now: Any) -> int:
        """Uploads never used by a message expire after a day (attachments.expires_at)."""
        count = 0
        async for doc in self.db.attachments.find(
            {"expires_at": {"$lte": now}, "message_ids": {"$size": 0}}
        ):
            await self.db.attachments.delete_one({"_id": doc["_id"]})
            if doc.get("blob_id"):
                await self.blobs.delete(doc["blob_id"])
            count += 1
        return count

    async def sweep_orphans(self, limit: int = 500) -> int:
        """Messages with no views (a crash between steps, or a failed listener).

        Each run checks the next ``limit`` messages after where the previous run stopped (kept
        in ``sweep_positions``), wrapping around at the end, so every message is visited.
        """
        position = await self.db.sweep_positions.find_one({"_id": "orphan_messages"})
        after = (position or {}).get("after")
        query = {"_id": {"$gt": after}} if after is not None else {}
        ids = [
            d["_id"]
            async for d in self.db.messages.find(query, {"_id": 1}).sort("_id", 1).limit(limit)
        ]
        await self.db.sweep_positions.update_one(
            {"_id": "orphan_messages"},
            {"$set": {"after": ids[-1] if len(ids) == limit else None}},
            upsert=True,
        )
        return await self.collect(ids)
