"""Composing a message: what a send or a draft says, checked, and the documents built from it.

Everything here is checks and document building over plain data, except ``sender_address``,
which asks the accounts service which addresses the viewer owns. The RFC 5322 bytes themselves
are built by ``app.domain.mime.build_mime``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.domain.addresses import (
    Address,
    domain_of,
    normalize_email,
    parse_address,
    parse_address_list,
)
from app.domain.attachments import attachment_ref
from app.domain.conversations import normalize_subject
from app.domain.errors import ValidationError
from app.domain.html_safety import html_to_text, make_snippet, sanitize_html
from app.domain.mime import OutgoingMessage, check_header_value
from app.domain.viewer import Viewer
from app.services.accounts import AccountService

MAX_SUBJECT = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
MAX_REFERENCES = 20


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


# The fields of a Composition a draft holds; a partial update names the ones it changes.
DRAFT_FIELDS = frozenset(
    {"from_", "to", "cc", "bcc", "subject", "text", "html", "attachment_ids", "in_reply_to"}
)


def patch_draft(saved: Composition, patch: Composition, present: frozenset[str]) -> Composition:
    """CONTRACT.md "Drafts: partial updates": the fields ``present`` in the input take the
    patch's value (a cleared field arrives as its empty value: ``None``, ``[]``, ``""``); every
    other field keeps the saved draft's."""
    unknown = present - DRAFT_FIELDS
    if unknown:
        raise ValueError(f"not draft fields: {sorted(unknown)}")
    return replace(saved, **{name: getattr(patch, name) for name in present})


def composition_of_draft(draft: dict[str, Any]) -> Composition:
    """What a stored draft message holds, as the Composition that would save it again."""
    return Composition(
        from_=(draft.get("from") or {}).get("email"),
        to=[a["email"] for a in draft.get("to", [])],
        cc=[a["email"] for a in draft.get("cc", [])],
        bcc=[a["email"] for a in draft.get("bcc", [])],
        subject=draft.get("subject") or "",
        # a text derived from the html is not the writer's: it follows the html when that changes
        text=draft.get("text_body") if draft.get("draft_text_given", True) else None,
        html=draft.get("html_body"),
        attachment_ids=[str(a["id"]) for a in draft.get("attachments", [])],
        in_reply_to=str(draft["draft_in_reply_to_item"])
        if draft.get("draft_in_reply_to_item")
        else None,
    )


@dataclass(frozen=True)
class Recipients:
    """The parsed to/cc/bcc lists, and everyone once (first spelling of an address wins)."""

    to: list[Address]
    cc: list[Address]
    bcc: list[Address]

    @property
    def everyone(self) -> list[Address]:
        seen: dict[str, Address] = {}
        for addresses in (self.to, self.cc, self.bcc):
            for a in addresses:
                seen.setdefault(normalize_email(a.email), a)
        return list(seen.values())


def addr_doc(a: Address) -> dict[str, Any]:
    return {"name": a.name, "email": a.email}


def parse_recipients(c: Composition) -> Recipients:
    return Recipients(
        parse_address_list(c.to, "to"),
        parse_address_list(c.cc, "cc"),
        parse_address_list(c.bcc, "bcc"),
    )


def check_recipient_count(everyone: list[Address], max_recipients: int) -> None:
    if not everyone:
        raise ValidationError.on("to", "give at least one recipient")
    if len(everyone) > max_recipients:
        raise ValidationError.on(
            "to",
            f"at most {max_recipients} recipients (to, cc and bcc together); got {len(everyone)}",
        )


def check_subject(subject: str) -> None:
    check_header_value(subject, "subject")
    if len(subject) > MAX_SUBJECT:
        raise ValidationError.on("subject", f"subject longer than {MAX_SUBJECT} characters")


def checked_body_size(c: Composition, max_body_bytes: int) -> int:
    """The size of the text and HTML bodies together, at most ``max_body_bytes``."""
    size = len((c.text or "").encode()) + len((c.html or "").encode())
    if size > max_body_bytes:
        raise ValidationError.on("text", f"body larger than {max_body_bytes} bytes")
    return size


def check_send_at(send_at: datetime | None, now: datetime) -> datetime | None:
    """When a scheduled send goes out (naive times are UTC); None for now or the past."""
    if send_at is None:
        return None
    if send_at.tzinfo is None:
        send_at = send_at.replace(tzinfo=UTC)
    if send_at > now + timedelta(days=365):
        raise ValidationError.on("sendAt", "sendAt at most one year ahead")
    return send_at if send_at > now else None


def references_after(parent: dict[str, Any]) -> list[str]:
    """A reply's References: the parent's, then the parent itself (RFC 5322 §3.6.4), the
    last MAX_REFERENCES of them."""
    return (list(parent.get("references") or []) + [parent.get("rfc822_message_id")])[
        -MAX_REFERENCES:
    ]


async def sender_address(
    accounts: AccountService, viewer: Viewer, from_: str | None, *, owned: list[str] | None = None
) -> Address:
    """The From address: one the viewer owns (their first when not given); ``owned``: the
    viewer's addresses when the caller has them already."""
    if owned is None:
        owned = await accounts.addresses_of(viewer.user_id)
    if not from_:
        return Address(owned[0] if owned else viewer.email, viewer.name)
    address = parse_address(from_, "from")
    if normalize_email(address.email) not in owned:
        raise ValidationError.on("from", f"{address.email} is not one of your addresses")
    return Address(address.email, address.name or viewer.name)


def content_fields(
    sender: Address,
    recipients: Recipients,
    subject: str,
    text: str | None,
    html: str | None,
    uploads: list[dict[str, Any]],
) -> dict[str, Any]:
    """The message fields a send and a draft share: addresses, subject, bodies, attachments."""
    text_body = text if text is not None else (html_to_text(html) if html else "")
    return {
        "from": addr_doc(sender),
        "to": [addr_doc(a) for a in recipients.to],
        "cc": [addr_doc(a) for a in recipients.cc],
        "bcc": [addr_doc(a) for a in recipients.bcc],
        "reply_to": [],
        "subject": subject,
        "normalized_subject": normalize_subject(subject),
        "snippet": make_snippet(text_body or ""),
        "text_body": text_body,
        "html_body": sanitize_html(html) if html else None,
        "attachments": [attachment_ref(a) for a in uploads],
        "has_attachments": bool(uploads),
        "size": len((text or "").encode())
        + len((html or "").encode())
        + sum(a["size"] for a in uploads),
    }


def message_doc(
    viewer: Viewer,
    m: OutgoingMessage,
    uploads: list[dict[str, Any]],
    raw: bytes,
    raw_blob: ObjectId,
    now: datetime,
    send_at: datetime | None,
) -> dict[str, Any]:
    """The ``messages`` document of an accepted send (``raw`` is its MIME, stored as a blob)."""
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
        **content_fields(
            m.from_,
            Recipients(list(m.to), list(m.cc), list(m.bcc)),
            m.subject,
            m.text,
            m.html,
            uploads,
        ),
    }
    doc["size"] = len(raw)
    return doc


def recipient_docs(
    message: dict[str, Any],
    recipients: Recipients,
    local_users: dict[str, ObjectId],
    suppressed: set[str],
    now: datetime,
    send_at: datetime | None,
) -> list[dict[str, Any]]:
    """One ``recipients`` document per address (the first of to, cc, bcc that names it):
    queued (scheduled with ``send_at``), or suppressed."""
    docs, seen = [], set()
    for kind, addresses in (("to", recipients.to), ("cc", recipients.cc), ("bcc", recipients.bcc)):
        for a in addresses:
            key = normalize_email(a.email)
            if key in seen:
                continue
            seen.add(key)
            local_user = local_users.get(key)
            status = "suppressed" if key in suppressed else ("scheduled" if send_at else "queued")
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
