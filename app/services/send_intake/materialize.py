"""The materializer: accepted sends become ordinary messages queued for delivery.

It takes the oldest accepted sends (``send_intake``, in id order), groups them by sender, and
stores many messages of one sender per transaction: raw MIME (GridFS layout, inline for a
small message), messages, recipients and their ``queued``/``suppressed`` events with
``insert_many``, the Sent views through the one filing path (``file_messages``: one counter
update, one change-log round trip for the batch), local recipients' Inbox views, and the
removal of the intake documents — all or nothing. Delivery jobs are enqueued after commit
(the delivery sweep finds queued recipients whose job was lost).

Every rule of a send applies as in ``send.py``, with its own pieces: suppression and local
recipients are read now (send time), ``sendAt`` and transactional are the accepted send's,
and the message and its Sent item get the ids allocated at intake.

Re-running a batch creates nothing twice: the intake documents are deleted in the same
transaction, and a transaction that finds fewer of them than it read (another materializer,
or a run killed after its commit) aborts, writing nothing; the next round reads again. It runs
as the ``materialize_sends`` job (enqueued after every intake commit, one at a time), and the
sweep (every 15 s and at worker start) resumes whatever a killed worker left.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.blob_batches import gridfs_documents
from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo, in_transaction
from app.adapters.queue import JobQueue
from app.domain.addresses import Address, normalize_email
from app.domain.changes import Change
from app.domain.errors import DomainError, ValidationError
from app.domain.folders import Folder
from app.domain.html_safety import sanitize_html
from app.domain.mime import OutgoingAttachment, OutgoingMessage, build_mime
from app.domain.templates import Rendered
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.events.buckets import KEYED, in_buckets
from app.services.feedback.suppression import SuppressionService, user_scope
from app.services.mailbox.filing import Filing, ViewSpec, file_messages
from app.services.sending.accepted import accepted_events, deliver_locally, delivery_jobs
from app.services.sending.compose import Recipients, message_doc, recipient_docs, references_after
from app.services.templates.render import TemplateRenderer, Variables

log = structlog.get_logger(__name__)

BATCH = 1000  # intake documents read per round
PER_TRANSACTION = 250  # messages of one sender per transaction
MAX_ATTEMPTS = 5  # a send that failed this often stays in send_intake, visible, for an operator


# (what goes into the transaction, the sends that could not be built and why, when)
_Built = tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]], datetime]


class _Gone(Exception):
    """Some intake documents of the batch were materialized meanwhile: abort, read again."""


class SendMaterializer:
    def __init__(
        self,
        *,
        mongo: Mongo,
        blobs: BlobStore,
        queue: JobQueue,
        accounts: AccountService,
        suppression: SuppressionService,
        renderer: TemplateRenderer,
        notifier: Notifier,
        hostname: str,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.blobs = blobs
        self.queue = queue
        self.accounts = accounts
        self.suppression = suppression
        self.renderer = renderer
        self.notifier = notifier
        self.hostname = hostname
        self._draining = asyncio.Lock()

    async def backlog(self) -> int:
        """Accepted sends not yet stored as messages."""
        return int(await self.db.send_intake.count_documents({}))

    async def drain(self, max_seconds: float | None = None) -> int:
        """Materialize until nothing accepted is left (or ``max_seconds`` have passed: a job
        stays within its timeout, the next sweep goes on); returns how many were stored."""
        if self._draining.locked():  # the job and the sweep of one worker: one drains
            return 0
        async with self._draining:
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            done = 0
            while deadline is None or time.monotonic() < deadline:
                n = await self.run_once()
                if n == 0:
                    break
                done += n
            return done

    async def run_once(self, limit: int = BATCH) -> int:
        """One round: the oldest ``limit`` accepted sends; returns how many were stored."""
        docs = (
            await self.db.send_intake.find({"attempts": {"$lt": MAX_ATTEMPTS}})
            .sort("_id", 1)
            .limit(limit)
            .to_list()
        )
        by_sender: dict[ObjectId, list[dict[str, Any]]] = defaultdict(list)
        for doc in docs:
            by_sender[doc["user_id"]].append(doc)
        chunks = [
            sender_docs[start : start + PER_TRANSACTION]
            for sender_docs in by_sender.values()
            for start in range(0, len(sender_docs), PER_TRANSACTION)
        ]
        # a pipeline: the next transaction's documents are built (rendered, MIME) while this
        # one commits, so this process and the database work at the same time
        stored = 0
        upcoming: asyncio.Future[_Built] | None = None
        for n, chunk in enumerate(chunks):
            built = await (upcoming if upcoming is not None else self._build(chunk))
            upcoming = (
                asyncio.ensure_future(self._build(chunks[n + 1])) if n + 1 < len(chunks) else None
            )
            try:
                stored += await self._store(built)
            except BaseException:
                if upcoming is not None:
                    upcoming.cancel()
                raise
        return stored

    async def _materialize(self, docs: list[dict[str, Any]]) -> int:
        """Store one sender's ``docs`` (at most PER_TRANSACTION) in one transaction."""
        return await self._store(await self._build(docs))

    async def _store(self, built_failed: _Built) -> int:
        built, failed, now = built_failed
        if failed:
            await self.db.send_intake.update_many(
                {"_id": {"$in": [d["_id"] for d, _ in failed]}},
                {"$inc": {"attempts": 1}, "$set": {"last_error": failed[0][1]}},
            )
        if not built:
            return 0
        user_id = built[0]["message"]["sender_user_id"]

        async def work(session: Any) -> list[Change]:
            ids = [b["message"]["_id"] for b in built]
            gone = await self.db.send_intake.delete_many({"_id": {"$in": ids}}, session=session)
            if gone.deleted_count != len(ids):
                raise _Gone
            files = [b["file"] for b in built]
            chunks = [c for b in built for c in b["chunks"]]
            await self.db["blobs.files"].insert_many(files, session=session)
            if chunks:
                await self.db["blobs.chunks"].insert_many(chunks, session=session)
            await self.db.messages.insert_many([b["message"] for b in built], session=session)
            recipients = [r for b in built for r in b["recipients"]]
            await self.db.recipients.insert_many(recipients, session=session)
            await self.db.delivery_events.insert_many(  # one bucket for the batch's events
                in_buckets(
                    [e for b in built for e in accepted_events(b["message"], b["recipients"], now)],
                    KEYED,
                ),
                session=session,
            )
            filed = await file_messages(
                self.db,
                [
                    Filing(
                        b["message"],
                        [
                            ViewSpec(
                                user_id, "sent", Folder.SENT.value, read=True, item_id=b["item_id"]
                            )
                        ],
                        now,
                        fresh_message_id=True,  # made at accept (make_message_id)
                    )
                    for b in built
                ],
                session,
            )
            changes = list(filed.changes)
            for b in built:
                if b["send_at"] is None:
                    changes += await deliver_locally(
                        self.db, b["message"], b["recipients"], now, session, hostname=self.hostname
                    )
            return changes

        try:
            changes = await in_transaction(self.mongo, work)
        except _Gone:
            log.info("accepted sends were materialized meanwhile; reading again", n=len(built))
            return 0
        for b in built:
            if b["message"]["attachments"]:
                await self.db.attachments.update_many(
                    {"_id": {"$in": [a["id"] for a in b["message"]["attachments"]]}},
                    {
                        "$addToSet": {"message_ids": b["message"]["_id"]},
                        "$unset": {"expires_at": ""},
                    },
                )
        await self.notifier.committed(changes)
        await self.queue.enqueue_many(  # one Redis round trip for the whole commit
            [
                job
                for b in built
                for job in delivery_jobs(b["message"], b["recipients"], b["send_at"])
            ]
        )
        return len(built)

    @staticmethod
    async def _by_id(
        collection: Any, ids: set[Any], projection: dict[str, int] | None = None
    ) -> dict[Any, dict[str, Any]]:
        """The documents of ``ids`` in ``collection``, by id (one query; none for no ids)."""
        if not ids:
            return {}
        found = await collection.find({"_id": {"$in": list(ids)}}, projection).to_list()
        return {d["_id"]: d for d in found}

    async def _build(self, docs: list[dict[str, Any]]) -> _Built:
        """Every document of the sends, built before the transaction (set-wise reads)."""
        now = datetime.now(UTC)
        user_id = docs[0]["user_id"]
        versions = await self._by_id(
            self.db.template_versions,
            {d["template"]["version_id"] for d in docs if d.get("template")},
        )
        uploads = await self._by_id(
            self.db.attachments, {a for d in docs for a in d.get("attachment_ids") or ()}
        )
        parents = await self._by_id(
            self.db.messages,
            {d["parent_message_id"] for d in docs if d.get("parent_message_id")},
            {"rfc822_message_id": 1, "references": 1},
        )
        addresses = sorted(
            {a["email"] for d in docs for kind in ("to", "cc", "bcc") for a in d[kind]}
        )
        local_users = await self.accounts.users_for_addresses(addresses)
        suppressed = await self.suppression.suppressed(
            [a for a in addresses if normalize_email(a) not in local_users],
            scope=user_scope(user_id),
        )
        renders = await self._render(docs, versions)
        built: list[dict[str, Any]] = []
        failed: list[tuple[dict[str, Any], str]] = []
        for doc in docs:
            try:
                built.append(
                    await self._one(doc, renders, uploads, parents, local_users, suppressed, now)
                )
            except (DomainError, KeyError) as e:  # a version or upload gone: visible, retried
                log.warning("accepted send not materialized", send=str(doc["_id"]), error=str(e))
                failed.append((doc, str(e)[:500]))
        return built, failed, now

    async def _render(
        self, docs: list[dict[str, Any]], versions: dict[ObjectId, dict[str, Any]]
    ) -> dict[ObjectId, Rendered | ValidationError]:
        """The template sends' messages, rendered together (the version is immutable and the
        variables are those checked when the send was accepted)."""
        todo = [d for d in docs if d.get("template") and d["template"]["version_id"] in versions]
        rendered = await self.renderer.render_versions(
            [
                (
                    versions[d["template"]["version_id"]],
                    Variables(json.loads(d["template"]["variables"]), d["template"]["variables"]),
                )
                for d in todo
            ]
        )
        return {d["_id"]: r for d, r in zip(todo, rendered, strict=True)}

    async def _one(
        self,
        doc: dict[str, Any],
        renders: dict[ObjectId, Rendered | ValidationError],
        uploads: dict[ObjectId, dict[str, Any]],
        parents: dict[ObjectId, dict[str, Any]],
        local_users: dict[str, ObjectId],
        suppressed: set[str],
        now: datetime,
    ) -> dict[str, Any]:
        subject, text, html = doc.get("subject") or "", doc.get("text"), doc.get("html")
        if doc.get("template"):
            rendered = renders.get(doc["_id"])
            if rendered is None:
                raise KeyError(f"template version {doc['template']['version_id']} is gone")
            if isinstance(rendered, ValidationError):
                raise rendered
            subject = doc.get("subject") or rendered.subject
            text, html = rendered.text_part(), rendered.html
        send_at = _aware(doc.get("send_at"))
        if send_at is not None and send_at <= now:
            send_at = None  # its time came while it waited here: it goes now
        parent = parents.get(doc.get("parent_message_id"))  # type: ignore[arg-type]
        in_reply_to = parent.get("rfc822_message_id") if parent else None
        files = [uploads[a] for a in doc.get("attachment_ids") or ()]
        recipients = Recipients(
            *(
                [Address(a["email"], a.get("name")) for a in doc[kind]]
                for kind in ("to", "cc", "bcc")
            )
        )
        sender = Address(doc["from"]["email"], doc["from"].get("name"))
        outgoing = OutgoingMessage(
            from_=sender,
            to=tuple(recipients.to),
            cc=tuple(recipients.cc),
            bcc=tuple(recipients.bcc),
            subject=subject,
            text=text,
            html=sanitize_html(html) if html else None,  # once, for MIME and the stored body
            attachments=tuple(
                [
                    OutgoingAttachment(
                        a["filename"], a["content_type"], await self.blobs.get(a["blob_id"])
                    )
                    for a in files
                ]
            ),
            message_id=doc["rfc822_message_id"],
            date=_aware(doc["accepted_at"]) or now,
            in_reply_to=in_reply_to,
            references=tuple(references_after(parent)) if parent and in_reply_to else (),
        )
        raw = build_mime(outgoing)
        blob_id = ObjectId()
        viewer = Viewer(doc["user_id"], sender.email, sender.name)
        message = message_doc(viewer, outgoing, files, raw, blob_id, now, send_at)
        message["_id"] = doc["_id"]
        if doc.get("transactional"):
            message["transactional"] = True
        file_doc, chunks = gridfs_documents(blob_id, raw, "message.eml", {"kind": "raw"}, now)
        return {
            "message": message,
            "item_id": doc["item_id"],
            "recipients": recipient_docs(
                message, recipients, local_users, suppressed, now, send_at
            ),
            "send_at": send_at,
            "file": file_doc,
            "chunks": chunks,
        }


def _aware(at: datetime | None) -> datetime | None:
    if at is not None and at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at
