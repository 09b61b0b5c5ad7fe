"""Abuse Reporting Format complaints (RFC 5965), as mailbox providers send them.

When a recipient presses "this is spam", feedback-loop providers send a
``multipart/report; report-type=feedback-report`` to the address registered for the loop. The
report names the original recipient only sometimes (many providers redact it), but the attached
original keeps its Return-Path, which is our VERP address: that identifies the message and the
recipient to suppress.
"""

from __future__ import annotations

import email
import email.message
import re
from dataclasses import dataclass

from app.domain.report_parts import FIELD, ORIGINAL_TYPES, part_text, parts, raw_header, subparts


@dataclass(frozen=True)
class FeedbackReport:
    feedback_type: str  # abuse, fraud, virus, other, not-spam, auth-failure (RFC 5965 §7.3)
    user_agent: str | None
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    reported_domain: str | None
    arrival_date: str | None
    source_ip: str | None
    original_message_id: str | None
    original_return_path: str | None  # from the attached original: our VERP address comes back
    original_headers: str | None  # the original's header block, "\n" line endings


def parse_feedback_report(raw: bytes) -> FeedbackReport | None:
    """The complaint in an ARF report, or None if the message is not one.

    Requires ``multipart/report; report-type=feedback-report``. The machine-readable part is
    message/feedback-report (or, from sloppy senders, a text/plain part holding a Feedback-Type
    field). A missing Feedback-Type is read as "other" rather than guessing "abuse".
    """
    message = email.message_from_bytes(raw)
    report = next((p for p in parts(message) if p.get_content_type() == "multipart/report"), None)
    if report is None or str(report.get_param("report-type", "")).lower() != "feedback-report":
        return None
    fields: dict[str, list[str]] | None = None
    original: email.message.Message | None = None
    for part in parts(report):
        content_type = part.get_content_type()
        if content_type == "message/feedback-report" and fields is None:
            fields = _fields(part_text(part))
        elif content_type in ORIGINAL_TYPES and original is None:
            original = part
        elif content_type == "text/plain" and fields is None:
            candidate = _fields(part_text(part))
            if "feedback-type" in candidate:
                fields = candidate
    if fields is None:
        return None
    headers = _original_headers(original)
    original_fields = _fields(headers) if headers else {}

    def first(name: str, source: dict[str, list[str]] = fields) -> str | None:
        values = source.get(name)
        return values[0] if values else None

    return FeedbackReport(
        feedback_type=(first("feedback-type") or "other").lower(),
        user_agent=first("user-agent"),
        original_mail_from=_bare_address(first("original-mail-from")),
        original_rcpt_to=tuple(
            a for a in map(_bare_address, fields.get("original-rcpt-to", [])) if a
        ),
        reported_domain=first("reported-domain"),
        # "Received-Date" is the draft-era name some providers still send.
        arrival_date=first("arrival-date") or first("received-date"),
        source_ip=first("source-ip"),
        original_message_id=first("message-id", original_fields),
        original_return_path=_bare_address(first("return-path", original_fields)),
        original_headers=headers,
    )


def _fields(text: str) -> dict[str, list[str]]:
    """Field name (lower case) → values in order, unfolded, up to the first blank line."""
    head = re.split(r"\r?\n[ \t]*\r?\n", re.sub(r"\r\n?", "\n", text).lstrip("\n"), maxsplit=1)[0]
    fields: dict[str, list[str]] = {}
    for line in re.sub(r"\n(?=[ \t])", "", head).split("\n"):
        match = FIELD.match(line)
        if match:
            value = " ".join(match.group(2).split())
            fields.setdefault(match.group(1).lower(), []).append(value)
    return fields


def _original_headers(part: email.message.Message | None) -> str | None:
    if part is None:
        return None
    inner_messages = subparts(part)
    if inner_messages:
        lines = [f"{name}: {raw_header(value)}" for name, value in inner_messages[0].raw_items()]
        return re.sub(r"\r\n?", "\n", "\n".join(lines)) or None
    text = re.sub(r"\r\n?", "\n", part_text(part)).lstrip("\n")
    block = text.split("\n\n", 1)[0].rstrip("\n")
    return block if block and FIELD.match(block.split("\n", 1)[0]) else None


def _bare_address(value: str | None) -> str | None:
    if value is None:
        return None
    address = value.strip().removeprefix("<").removesuffix(">").strip()
    return address or None
