"""A stored message as filing sees it, for the threading tests (only what threading reads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bson import ObjectId

from app.domain.conversations import normalize_subject


def message(
    mid: str | None,
    subject: str,
    *,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    sender: str = "ann@remote.test",
    to: str = "me@example.test",
) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "rfc822_message_id": mid,
        "in_reply_to": in_reply_to,
        "references": list(references),
        "subject": subject,
        "normalized_subject": normalize_subject(subject),
        "from": {"name": None, "email": sender},
        "to": [{"name": None, "email": to}],
        "cc": [],
        "snippet": "",
        "has_attachments": False,
        "size": 10,
    }
