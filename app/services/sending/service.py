"""Sending and drafts (seed §7): validate, build the RFC 5322 message, store it, file the views.

A send is one transaction: the message, its recipients, the sender's Sent view and the Inbox
views of recipients hosted here all exist, or none do. Remote recipients stay ``queued`` for
the delivery workers; the job enqueued after commit is only the fast path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo, in_transaction, is_duplicate_key
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.config import Settings
from app.domain.addresses import (
    Address,
    domain_of,
    normalize_email,
    parse_address,
    parse_address_list,
)
from app.domain.changes import Change
from app.domain.conversations import normalize_subject
from app.domain.errors import NotFound, RateLimited, ValidationError
from app.domain.folders import Folder, counter_deltas
from app.domain.html_safety import html_to_text, make_snippet, sanitize_html
from app.domain.mime import (
    OutgoingAttachment,
    OutgoingMessage,
    build_mime,
    check_header_value,
    make_message_id,
)
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.feedback.suppression import SuppressionService, user_scope
from app.services.mailbox.filing import (
    ViewSpec,
    apply_counter_deltas,
    file_message,
    record_changes,
    refresh_threads,
    summary_of,
)
from app.services.mailbox.service import MailboxService
from app.services.sending.attachments import AttachmentService

MAX_SUBJECT = 998
MAX_REFERENCES = 20
MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True)
class Composition:
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    from_: str | None = None
    attachment_ids: list[str] = field(default_factory=list)
    in_reply_to: str | None = None  # a mailbox item id of the viewer
    idempotency_key: str | None = None
    send_at: datetime | None = None
    # transactional mail (receipts, password resets): a shorter queue lifetime, and it still
    # goes out while the sender's bulk sending is paused by the reputation rules
    transactional: bool = False


def addr_doc(a: Address) -> dict[str, Any]:
    return {"name": a.name, "email": a.email}


class SendingService:
    reputation: Any = None  # ReputationService, wired by bootstrap: paused senders are refused

    def __init__(
        self,
        *,
        mongo: Mongo,
        blobs: BlobStore,
        redis: RedisStore,
        queue: JobQueue,
        accounts: AccountService,
        attachments: AttachmentService,
        mailbox: MailboxService,
        notifier: Notifier,
        settings: Settings,
        suppression: SuppressionService,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.blobs = blobs
        self.redis = redis
        self.queue = queue
        self.accounts = accounts
        self.attachments = attachments
        self.mailbox = mailbox
        self.notifier = notifier
        self.settings = settings
        self.suppression = suppression

    # --- send ----------------------------------------------------------------------------

    async def send_email(
        self, viewer: Viewer, c: Composition, *, replacing_draft: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Validate and accept a message; returns the viewer's Sent view."""
        if c.idempotency_key is not None:
            if not 1 <= len(c.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
                raise ValidationError.on("idempotencyKey", f"1 to {MAX_IDEMPOTENCY_KEY} characters")
            earlier = await self._idempotent_result(viewer, c.idempotency_key)
            if earlier is not None:
                return earlier
        now = datetime.now(UTC)
        sender = await self._sender_address(viewer, c.from_)
        if self.reputation is not None and not c.transactional:  # read at send time (§6)
            await self.reputation.check_can_send(viewer.user_id, domain_of(sender.email))
        to = parse_address_list(c.to, "to")
        cc = parse_address_list(c.cc, "cc")
        bcc = parse_address_list(c.bcc, "bcc")
        everyone = self._dedupe_recipients(to, cc, bcc)
        if not everyone:
            raise ValidationError.on("to", "give at least one recipient")
        if len(everyone) > self.settings.max_recipients:
            raise ValidationError.on(
                "to",
                f"at most {self.settings.max_recipients} recipients "
                f"(to, cc and bcc together); got {len(everyone)}",
            )
        subject = c.subject or ""
        check_header_value(subject, "subject")
        if len(subject) > MAX_SUBJECT:
            raise ValidationError.on("subject", f"subject longer than {MAX_SUBJECT} characters")
        body_size = len((c.text or "").encode()) + len((c.html or "").encode())
        if body_size > self.settings.max_body_bytes:
            raise ValidationError.on(
                "text", f"body larger than {self.settings.max_body_bytes} bytes"
            )
        uploads = await self.attachments.owned_ready(viewer, c.attachment_ids)
        if body_size + sum(a["size"] for a in uploads) > self.settings.max_message_bytes:
            raise ValidationError.on(
                "attachmentIds",
                f"message larger than {self.settings.max_message_bytes // (1024 * 1024)} MB",
            )
        send_at = self._check_send_at(c.send_at, now)
        if self.settings.undo_seconds:  # the undo window: every send waits, cancelSend can stop it
            send_at = max(send_at or now, now + timedelta(seconds=self.settings.undo_seconds))
        parent = (
            await self.mailbox.require_item(viewer, c.in_reply_to, "inReplyTo")
            if c.in_reply_to
            else None
        )
        parent_msg = (
            (await self.db.messages.find_one({"_id": parent["message_id"]})) if parent else None
        )

        verdict = await self.redis.hit(
            f"send-hour:{viewer.user_id}",
            self.settings.send_limit_per_hour,
            3600,
            cost=len(everyone),
        )
        if verdict.allowed:
            verdict = await self.redis.hit(
                f"send-day:{viewer.user_id}",
                self.settings.send_limit_per_day,
                86400,
                cost=len(everyone),
            )
        if not verdict.allowed:
            raise RateLimited(
                "sending limit reached; try again later",
                retry_after_seconds=verdict.retry_after_seconds,
            )

        in_reply_to = parent_msg.get("rfc822_message_id") if parent_msg else None
        references = (
            tuple((list(parent_msg.get("references") or []) + [in_reply_to])[-MAX_REFERENCES:])
            if parent_msg and in_reply_to
            else ()
        )
        outgoing = OutgoingMessage(
            from_=sender,
            to=tuple(to),
            cc=tuple(cc),
            bcc=tuple(bcc),
            subject=subject,
            text=c.text,
            html=c.html,
            attachments=tuple(
                [
                    OutgoingAttachment(
                        a["filename"], a["content_type"], await self.blobs.get(a["blob_id"])
                    )
                    for a in uploads
                ]
            ),
            message_id=make_message_id(self.settings.hostname),
            date=now,
            in_reply_to=in_reply_to,
            references=references,
        )
        raw = build_mime(outgoing)
        raw_blob = await self.blobs.put(raw, filename="message.eml", metadata={"kind": "raw"})
        message = self._message_doc(viewer, outgoing, uploads, raw, raw_blob, now, send_at)
        if c.transactional:
            message["transactional"] = True
        local_users = await self.accounts.users_for_addresses([a.email for a in everyone])
        suppressed = await self.suppression.suppressed(
            [a.email for a in everyone if normalize_email(a.email) not in local_users],
            scope=user_scope(viewer.user_id),
        )
        recipients = self._recipient_docs(
            message, to, cc, bcc, local_users, suppressed, now, send_at
        )

        async def work(session: Any) -> tuple[dict[str, Any], list[Change]]:
            if replacing_draft is not None:
                await self._remove_draft(viewer, replacing_draft, session)
            await self.db.messages.insert_one(message, session=session)
            await self.db.recipients.insert_many(recipients, session=session)
            await self.db.delivery_events.insert_many(
                [
                    {
                        "message_id": message["_id"],
                        "recipient": r["address"],
                        "recipient_id": r["_id"],
                        "event_type": "suppressed"
                        if r["delivery_status"] == "suppressed"
                        else "queued",
                        "occurred_at": now,
                        "sender_user_id": viewer.user_id,
                        "sender_domain": domain_of(sender.email),
                        "metadata": {},
                    }
                    for r in recipients
                ],
                session=session,
            )
            views = [ViewSpec(viewer.user_id, "sent", Folder.SENT.value, read=True)]
            items, changes = await file_message(
                self.db, message, views, received_at=now, session=session
            )
            if send_at is None:
                changes += await self.deliver_locally(message, recipients, now, session)
            if c.idempotency_key:
                await self.db.idempotency_keys.insert_one(
                    {
                        "_id": f"{viewer.user_id}:{c.idempotency_key}",
                        "item_id": items[0]["_id"],
                        "created_at": now,
                    },
                    session=session,
                )
            return items[0], changes

        try:
            sent_item, changes = await in_transaction(self.mongo, work)
        except Exception as e:
            await self.blobs.delete(raw_blob)
            if c.idempotency_key and is_duplicate_key(e):
                earlier = await self._idempotent_result(viewer, c.idempotency_key)
                if earlier is not None:
                    return earlier
            raise
        await self.db.attachments.update_many(
            {"_id": {"$in": [a["_id"] for a in uploads]}},
            {"$addToSet": {"message_ids": message["_id"]}, "$unset": {"expires_at": ""}},
        )
        await self.notifier.committed(changes)
        await self._enqueue_delivery(message, recipients, send_at)
        return sent_item

    async def deliver_locally(
        self, message: dict[str, Any], recipients: list[dict[str, Any]], now: datetime, session: Any
    ) -> list[Change]:
        """File Inbox views for recipients hosted here and mark them delivered."""
        local = [
            r
            for r in recipients
            if r.get("local_user_id") and r["delivery_status"] in ("queued", "scheduled")
        ]
        if not local:
            return []
        users = list(dict.fromkeys(r["local_user_id"] for r in local))
        _, changes = await file_message(
            self.db,
            message,
            [ViewSpec(u, "received", Folder.INBOX.value) for u in users],
            received_at=now,
            session=session,
        )
        ids = [r["_id"] for r in local]
        await self.db.recipients.update_many(
            {"_id": {"$in": ids}},
            {
                "$set": {
                    "delivery_status": "sent",
                    "updated_at": now,
                    "attempts": 1,
                    "last_reply": {
                        "code": 250,
                        "enhanced": "2.0.0",
                        "text": "delivered to a local mailbox",
                        "mx": self.settings.hostname,
                    },
                }
            },
            session=session,
        )
        await self.db.delivery_events.insert_many(
            [
                {
                    "message_id": message["_id"],
                    "recipient": r["address"],
                    "recipient_id": r["_id"],
                    "event_type": "delivered",
                    "occurred_at": now,
                    "sender_user_id": message["sender_user_id"],
                    "sender_domain": domain_of(message["from"]["email"]),
                    "metadata": {"local": True},
                }
                for r in local
            ],
            session=session,
        )
        return changes

    # --- drafts --------------------------------------------------------------------------

    async def save_draft(
        self, viewer: Viewer, draft_id: str | None, c: Composition
    ) -> dict[str, Any]:
        """Create or update a draft. Addresses must parse; nothing else is required yet."""
        now = datetime.now(UTC)
        sender = await self._sender_address(viewer, c.from_)
        to, cc, bcc = (
            parse_address_list(c.to, "to"),
            parse_address_list(c.cc, "cc"),
            parse_address_list(c.bcc, "bcc"),
        )
        check_header_value(c.subject or "", "subject")
        if (
            len((c.text or "").encode()) + len((c.html or "").encode())
            > self.settings.max_body_bytes
        ):
            raise ValidationError.on(
                "text", f"body larger than {self.settings.max_body_bytes} bytes"
            )
        uploads = await self.attachments.owned_ready(viewer, c.attachment_ids)
        parent = (
            await self.mailbox.require_item(viewer, c.in_reply_to, "inReplyTo")
            if c.in_reply_to
            else None
        )
        fields = self._content_fields(sender, to, cc, bcc, c.subject or "", c.text, c.html, uploads)
        fields.update(
            {"draft_in_reply_to_item": parent["_id"] if parent else None, "updated_at": now}
        )
        if parent:
            parent_msg = await self.db.messages.find_one({"_id": parent["message_id"]}) or {}
            fields["in_reply_to"] = parent_msg.get("rfc822_message_id")
            fields["references"] = (
                list(parent_msg.get("references") or []) + [parent_msg.get("rfc822_message_id")]
            )[-MAX_REFERENCES:]

        if draft_id is None:
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
            draft_item = await self._draft_item(viewer, draft_id)

            async def update(session: Any) -> tuple[dict[str, Any], list[Change]]:
                await self.db.messages.update_one(
                    {"_id": draft_item["message_id"], "status": "draft"},
                    {"$set": fields},
                    session=session,
                )
                summary = summary_of(fields)
                updated = await self.db.mailbox_items.find_one_and_update(
                    {"_id": draft_item["_id"]},
                    {"$set": {**summary, "received_at": now}, "$inc": {"version": 1}},
                    session=session,
                    return_document=True,
                )
                if updated is None:  # deleted meanwhile (another tab): nothing is changed
                    raise NotFound(f"no draft with id {draft_item['_id']}")
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
        composition = Composition(
            from_=(draft.get("from") or {}).get("email"),
            to=[a["email"] for a in draft.get("to", [])],
            cc=[a["email"] for a in draft.get("cc", [])],
            bcc=[a["email"] for a in draft.get("bcc", [])],
            subject=draft.get("subject") or "",
            text=draft.get("text_body"),
            html=draft.get("html_body"),
            attachment_ids=[str(a["id"]) for a in draft.get("attachments", [])],
            in_reply_to=str(draft["draft_in_reply_to_item"])
            if draft.get("draft_in_reply_to_item")
            else None,
        )
        sent = await self.send_email(viewer, composition, replacing_draft=item)
        await self.notifier.content_released([item["message_id"]])
        return sent

    # --- helpers -------------------------------------------------------------------------

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

    async def _sender_address(self, viewer: Viewer, from_: str | None) -> Address:
        owned = await self.accounts.addresses_of(viewer.user_id)
        if not from_:
            return Address(owned[0] if owned else viewer.email, viewer.name)
        address = parse_address(from_, "from")
        if normalize_email(address.email) not in owned:
            raise ValidationError.on("from", f"{address.email} is not one of your addresses")
        return Address(address.email, address.name or viewer.name)

    @staticmethod
    def _dedupe_recipients(*lists: list[Address]) -> list[Address]:
        seen: dict[str, Address] = {}
        for addresses in lists:
            for a in addresses:
                seen.setdefault(normalize_email(a.email), a)
        return list(seen.values())

    @staticmethod
    def _check_send_at(send_at: datetime | None, now: datetime) -> datetime | None:
        if send_at is None:
            return None
        if send_at.tzinfo is None:
            send_at = send_at.replace(tzinfo=UTC)
        if send_at > now + timedelta(days=365):
            raise ValidationError.on("sendAt", "sendAt at most one year ahead")
        return send_at if send_at > now else None

    async def _idempotent_result(self, viewer: Viewer, key: str) -> dict[str, Any] | None:
        doc = await self.db.idempotency_keys.find_one({"_id": f"{viewer.user_id}:{key}"})
        if doc is None:
            return None
        return await self.db.mailbox_items.find_one(
            {"_id": doc["item_id"], "user_id": viewer.user_id}
        )

    def _content_fields(
        self,
        sender: Address,
        to: list[Address],
        cc: list[Address],
        bcc: list[Address],
        subject: str,
        text: str | None,
        html: str | None,
        uploads: list[dict[str, Any]],
    ) -> dict[str, Any]:
        text_body = text if text is not None else (html_to_text(html) if html else "")
        return {
            "from": addr_doc(sender),
            "to": [addr_doc(a) for a in to],
            "cc": [addr_doc(a) for a in cc],
            "bcc": [addr_doc(a) for a in bcc],
            "reply_to": [],
            "subject": subject,
            "normalized_subject": normalize_subject(subject),
            "snippet": make_snippet(text_body or ""),
            "text_body": text_body,
            "html_body": sanitize_html(html) if html else None,
            "attachments": [
                {
                    "id": a["_id"],
                    "filename": a["filename"],
                    "content_type": a["content_type"],
                    "size": a["size"],
                    "sha256": a["sha256"],
                    "blob_id": a["blob_id"],
                }
                for a in uploads
            ],
            "has_attachments": bool(uploads),
            "size": len((text or "").encode())
            + len((html or "").encode())
            + sum(a["size"] for a in uploads),
        }

    def _message_doc(
        self,
        viewer: Viewer,
        m: OutgoingMessage,
        uploads: list[dict[str, Any]],
        raw: bytes,
        raw_blob: ObjectId,
        now: datetime,
        send_at: datetime | None,
    ) -> dict[str, Any]:
        doc = {
            "_id": ObjectId(),
            "rfc822_message_id": m.message_id,
            "sender_user_id": viewer.user_id,
            "direction": "outbound",
            "status": "scheduled" if send_at else "queued",
            "in_reply_to": m.in_reply_to,
            "references": list(m.references),
            "raw_blob_id": raw_blob,
            "content_sha256": hashlib.sha256(raw).hexdigest(),
            "created_at": now,
            "send_at": send_at,
            "headers": {},
            "spam": None,
            "auth_results": None,
            **self._content_fields(
                m.from_, list(m.to), list(m.cc), list(m.bcc), m.subject, m.text, m.html, uploads
            ),
        }
        doc["size"] = len(raw)
        return doc

    def _recipient_docs(
        self,
        message: dict[str, Any],
        to: list[Address],
        cc: list[Address],
        bcc: list[Address],
        local_users: dict[str, ObjectId],
        suppressed: set[str],
        now: datetime,
        send_at: datetime | None,
    ) -> list[dict[str, Any]]:
        docs, seen = [], set()
        for kind, addresses in (("to", to), ("cc", cc), ("bcc", bcc)):
            for a in addresses:
                key = normalize_email(a.email)
                if key in seen:
                    continue
                seen.add(key)
                local_user = local_users.get(key)
                status = (
                    "suppressed" if key in suppressed else ("scheduled" if send_at else "queued")
                )
                docs.append(
                    {
                        "_id": ObjectId(),
                        "message_id": message["_id"],
                        "address": a.email,
                        "address_key": key,
                        "domain": domain_of(a.email),
                        "type": kind,
                        "local_user_id": local_user,
                        "delivery_status": status,
                        "attempts": 0,
                        "next_attempt_at": send_at or now,
                        "lease_until": None,
                        "last_reply": None,
                        "bounce_class": None,
                        "created_at": now,
                        "updated_at": now,
                        "sender_user_id": message["sender_user_id"],
                    }
                )
        return docs

    async def _enqueue_delivery(
        self, message: dict[str, Any], recipients: list[dict[str, Any]], send_at: datetime | None
    ) -> None:
        domains = sorted(
            {
                r["domain"]
                for r in recipients
                if not r.get("local_user_id") and r["delivery_status"] in ("queued", "scheduled")
            }
        )
        for domain in domains:
            await self.queue.enqueue(
                "deliver_domain",
                str(message["_id"]),
                domain,
                job_id=f"deliver:{message['_id']}:{domain}",
                defer_until=send_at,
            )
        if send_at:  # the release queues the recipients (and delivers local ones) when due
            await self.queue.enqueue(
                "release_scheduled",
                str(message["_id"]),
                job_id=f"release:{message['_id']}",
                defer_until=send_at,
            )
