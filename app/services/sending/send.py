"""Sending (seed §7): validate, build the RFC 5322 message, store it, file the views.

A send is stored in one transaction: the message, its raw MIME, its recipients, the sender's
Sent view and the Inbox views of recipients hosted here all exist, or none do. That
transaction is shared with the sends of other callers that queued meanwhile (the group
commit, ``group_commit.py``); each caller is answered once it has committed. Remote
recipients stay ``queued`` for the delivery workers; the job enqueued after commit is only the
fast path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo, is_duplicate_key
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.batching import SharedLookup
from app.config import Settings
from app.domain.addresses import Address, domain_of, normalize_email
from app.domain.errors import RateLimited, ServiceUnavailable, ValidationError
from app.domain.html_safety import sanitize_html
from app.domain.mime import OutgoingAttachment, OutgoingMessage, build_mime, make_message_id
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.feedback.reputation import ReputationService
from app.services.feedback.suppression import GLOBAL as SUPPRESSED_FOR_ALL
from app.services.feedback.suppression import SuppressionService, user_scope
from app.services.mailbox.queries import MailboxService
from app.services.sending.attachments import AttachmentService
from app.services.sending.compose import (
    Composition,
    Recipients,
    check_recipient_count,
    check_send_at,
    check_subject,
    checked_body_size,
    message_doc,
    parse_recipients,
    recipient_docs,
    references_after,
    sender_address,
)
from app.services.sending.group_commit import AlsoInTransaction, PreparedSend, SendCommitter

MAX_IDEMPOTENCY_KEY = 200


@dataclass
class SendLookups:
    """What the checks of several sends of one viewer share (one batch): the viewer's
    addresses, and the sender domains already found not paused."""

    owned: list[str] | None = None
    may_send: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class CheckedSend:
    """A send that passed every check (``SendingService.check_send``)."""

    sender: Address
    recipients: Recipients
    subject: str
    uploads: list[dict[str, Any]]
    send_at: datetime | None
    parent_msg: dict[str, Any] | None


class SendingService:
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
        reputation: ReputationService,
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
        self.reputation = reputation  # paused senders are refused
        self.committer = SendCommitter(
            mongo=mongo, blobs=blobs, queue=queue, notifier=notifier, hostname=settings.hostname
        )
        # Concurrent sends share their reads of local recipients and suppressions (each answer
        # from a query sent after it was asked, so as fresh as one of its own): one query each
        # for what queued while the previous ran, instead of one each per send.
        self._local_users: SharedLookup[str, ObjectId] = SharedLookup(accounts.users_for_addresses)
        self._suppressions: SharedLookup[tuple[str, str], bool] = SharedLookup(
            self._fetch_suppressions
        )

    async def send_email(
        self,
        viewer: Viewer,
        c: Composition,
        *,
        also_in_transaction: AlsoInTransaction | None = None,
    ) -> dict[str, Any]:
        """Validate and accept a message; returns the viewer's Sent view once the (shared)
        transaction that stores it has committed."""
        if c.idempotency_key is not None:
            if not 1 <= len(c.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
                raise ValidationError.on("idempotencyKey", f"1 to {MAX_IDEMPOTENCY_KEY} characters")
            earlier = await self._idempotent_result(viewer, c.idempotency_key)
            if earlier is not None:
                return earlier
        # to the millisecond, as MongoDB keeps it: the Sent view this returns is the one a read
        # (or a repeated idempotency key, whichever caller's send was stored) gives back later
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        checked = await self.check_send(viewer, c, now)
        await self.charge_send_limit(viewer, len(checked.recipients.everyone))
        sender, parsed, subject = checked.sender, checked.recipients, checked.subject
        uploads, send_at, parent_msg = checked.uploads, checked.send_at, checked.parent_msg
        everyone = parsed.everyone

        in_reply_to = parent_msg.get("rfc822_message_id") if parent_msg else None
        references = tuple(references_after(parent_msg)) if parent_msg and in_reply_to else ()
        outgoing = OutgoingMessage(
            from_=sender,
            to=tuple(parsed.to),
            cc=tuple(parsed.cc),
            bcc=tuple(parsed.bcc),
            subject=subject,
            text=c.text,
            html=sanitize_html(c.html) if c.html else None,  # once, for MIME and the stored body
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
        raw_blob = ObjectId()  # stored in the send's transaction, with the message naming it
        message = message_doc(viewer, outgoing, uploads, raw, raw_blob, now, send_at)
        if c.transactional:
            message["transactional"] = True
        addresses = [normalize_email(a.email) for a in everyone]
        local_users = await self._local_users.get(addresses)
        suppressed = await self._suppressed_for(
            viewer, [a for a in addresses if a not in local_users]
        )
        recipients = recipient_docs(message, parsed, local_users, suppressed, now, send_at)
        prepared = PreparedSend(
            user_id=viewer.user_id,
            message=message,
            raw=raw,
            recipients=recipients,
            attachment_ids=[a["_id"] for a in uploads],
            send_at=send_at,
            now=now,
            idempotency_key=c.idempotency_key,
            also_in_transaction=also_in_transaction,
        )
        try:  # stored with whatever other sends queued meanwhile, answered once durable
            return await self.committer.commit(prepared)
        except Exception as e:
            if c.idempotency_key and is_duplicate_key(e):
                earlier = await self._idempotent_result(viewer, c.idempotency_key)
                if earlier is not None:
                    return earlier
            raise

    async def _suppressed_for(self, viewer: Viewer, addresses: list[str]) -> set[str]:
        """The normalized ``addresses`` suppressed for the viewer's mail (their own entries and
        the global ones), read with concurrent sends' (``_suppressions``)."""
        if not addresses:
            return set()
        scope = user_scope(viewer.user_id)
        found = await self._suppressions.get(
            [(a, s) for a in addresses for s in (scope, SUPPRESSED_FOR_ALL)]
        )
        return {a for a, _ in found}

    async def _fetch_suppressions(
        self, wanted: list[tuple[str, str]]
    ) -> dict[tuple[str, str], bool]:
        found = await self.suppression.suppressed_in_scopes(
            sorted({a for a, _ in wanted}), sorted({s for _, s in wanted})
        )
        return {key: True for key in wanted if key in found}

    async def check_send(
        self,
        viewer: Viewer,
        c: Composition,
        now: datetime,
        *,
        lookups: SendLookups | None = None,
    ) -> CheckedSend:
        """Every check of a send that needs no write: sender identity, reputation pause,
        addresses, header injection, sizes, attachments owned and ready, sendAt, the parent of
        a reply. The per-send transaction and the batched intake (``intake.py``) both use it;
        ``lookups`` shares the sender's addresses and pauses across one batch."""
        lookups = lookups or SendLookups()
        if lookups.owned is None:
            lookups.owned = await self.accounts.addresses_of(viewer.user_id)
        sender = await sender_address(self.accounts, viewer, c.from_, owned=lookups.owned)
        sender_domain = domain_of(sender.email)
        if not c.transactional and sender_domain not in lookups.may_send:  # read at send time (§6)
            await self.reputation.check_can_send(viewer.user_id, sender_domain)
            lookups.may_send.add(sender_domain)
        parsed = parse_recipients(c)
        check_recipient_count(parsed.everyone, self.settings.max_recipients)
        subject = c.subject or ""
        check_subject(subject)
        body_size = checked_body_size(c, self.settings.max_body_bytes)
        uploads = (
            await self.attachments.owned_ready(viewer, c.attachment_ids) if c.attachment_ids else []
        )
        if body_size + sum(a["size"] for a in uploads) > self.settings.max_message_bytes:
            raise ValidationError.on(
                "attachmentIds",
                f"message larger than {self.settings.max_message_bytes // (1024 * 1024)} MB",
            )
        send_at = check_send_at(c.send_at, now)
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
        return CheckedSend(sender, parsed, subject, uploads, send_at, parent_msg)

    async def charge_send_limit(self, viewer: Viewer, cost: int) -> None:
        """Count ``cost`` recipients against the viewer's hourly and daily sending limits."""
        verdict = await self.redis.hit(
            f"send-hour:{viewer.user_id}", self.settings.send_limit_per_hour, 3600, cost=cost
        )
        if verdict.allowed:
            verdict = await self.redis.hit(
                f"send-day:{viewer.user_id}", self.settings.send_limit_per_day, 86400, cost=cost
            )
        if not verdict.allowed:
            raise RateLimited(
                "sending limit reached; try again later",
                retry_after_seconds=verdict.retry_after_seconds,
            )

    async def _idempotent_result(self, viewer: Viewer, key: str) -> dict[str, Any] | None:
        doc = await self.db.idempotency_keys.find_one({"_id": f"{viewer.user_id}:{key}"})
        if doc is None:
            return None
        item = await self.db.mailbox_items.find_one(
            {"_id": doc["item_id"], "user_id": viewer.user_id}
        )
        if item is None and "message_id" in doc:  # accepted by the batched intake, not stored yet
            raise ServiceUnavailable(
                "a send with this idempotencyKey was accepted and is being stored; retry shortly",
                retry_after_seconds=1,
            )
        return item
