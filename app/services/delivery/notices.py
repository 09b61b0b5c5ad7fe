"""Delivery status notifications into the sender's Inbox (RFC 3464; seed §9).

A bounced or expired recipient, or one deferred for hours, produces a DSN addressed to the
sender. It is stored like received mail (raw bytes in the blob store, a message document, an
Inbox view) inside the caller's transaction, so a notice exists exactly when the outcome that
caused it was recorded. It threads with the original: In-Reply-To/References name the original's
Message-ID, and its thread key is the original's subject (a DSN's own subject, "Undelivered
Mail Returned to Sender", would otherwise start a new conversation under RFC 8621 §3's rule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.domain.changes import Change
from app.domain.dsn import RecipientReport
from app.domain.folders import Folder
from app.domain.html_safety import make_snippet
from app.domain.mime import make_message_id
from app.domain.outgoing_dsn import build_dsn
from app.domain.parsing import parse_message
from app.services.mailbox.filing import Filing, ViewSpec, file_messages


@dataclass(frozen=True)
class Notice:
    """A built DSN, ready to be stored: raw bytes first (GridFS takes no part in transactions),
    then ``file_notices`` inside the transaction that records the outcomes it reports."""

    kind: str  # failure | delay
    original: dict[str, Any]  # the original message document
    recipient_ids: tuple[ObjectId, ...]
    rfc822_message_id: str
    raw: bytes


def build_notice(
    *,
    hostname: str,
    message: dict[str, Any],
    original_headers: bytes,
    reports: Sequence[RecipientReport],
    recipient_ids: Sequence[ObjectId],
    kind: str,
    now: datetime,
    will_retry_until: datetime | None,
) -> Notice:
    """The DSN for ``reports`` about ``message``, addressed to its sender."""
    message_id = make_message_id(hostname)
    raw = build_dsn(
        reporting_mta=hostname,
        from_address=f"MAILER-DAEMON@{hostname}",
        to_address=message["from"]["email"],
        original_headers=original_headers,
        original_message_id=message.get("rfc822_message_id"),
        original_subject=message.get("subject") or "",
        recipients=list(reports),
        arrival_date=message["created_at"],
        message_id=message_id,
        now=now,
        kind=kind,
        will_retry_until=will_retry_until,
    )
    return Notice(kind, message, tuple(recipient_ids), message_id, raw)


async def store_raw(blobs: BlobStore, notice: Notice) -> ObjectId:
    return await blobs.put(notice.raw, filename="dsn.eml", metadata={"kind": "raw"})


async def file_notices(
    db: Any,
    notices: Sequence[tuple[Notice, ObjectId]],
    *,
    hostname: str,
    now: datetime,
    session: Any,
) -> list[Change]:
    """Store each notice's message document and its Inbox view, inside the caller's
    transaction: one filing batch for all of them (``notices`` pairs a notice with the blob
    id of its raw bytes)."""
    if not notices:
        return []
    docs, filings = [], []
    for notice, blob_id in notices:
        doc, view = _notice_document(notice, blob_id, hostname=hostname, now=now)
        docs.append(doc)
        filings.append(Filing(doc, [view], now))
    await db.messages.insert_many(docs, session=session)
    return (await file_messages(db, filings, session)).changes


def _notice_document(
    notice: Notice, blob_id: ObjectId, *, hostname: str, now: datetime
) -> tuple[dict[str, Any], ViewSpec]:
    """The message document of one notice and its view in the sender's Inbox."""
    message = notice.original
    parsed = parse_message(notice.raw)
    original_id = message.get("rfc822_message_id")
    doc = {
        "_id": ObjectId(),
        "rfc822_message_id": notice.rfc822_message_id,
        "sender_user_id": None,
        "direction": "inbound",
        "status": "received",
        "kind": "dsn",
        "from": {"name": "Mail Delivery System", "email": f"MAILER-DAEMON@{hostname}"},
        "to": [{"name": message["from"].get("name"), "email": message["from"]["email"]}],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "subject": parsed.subject,
        "normalized_subject": message.get("normalized_subject") or "",
        "snippet": make_snippet(parsed.text_body or ""),
        "text_body": parsed.text_body,
        "html_body": None,
        "attachments": [],
        "has_attachments": False,
        "size": len(notice.raw),
        "raw_blob_id": blob_id,
        "in_reply_to": original_id,
        "references": [original_id] if original_id else [],
        "headers": {},
        "spam": None,
        "auth_results": None,
        "created_at": now,
        "dsn": {
            "kind": notice.kind,
            "original_message_id": message["_id"],
            "recipient_ids": list(notice.recipient_ids),
        },
    }
    # Retried flushes must not file the same notice twice: the key names the recipients.
    key = hashlib.sha256(b"".join(i.binary for i in sorted(notice.recipient_ids))).hexdigest()[:24]
    view = ViewSpec(
        message["sender_user_id"],
        "received",
        Folder.INBOX.value,
        dedupe_key=f"dsn:{notice.kind}:{message['_id']}:{key}",
    )
    return doc, view
