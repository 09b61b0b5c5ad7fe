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
from collections.abc import Iterator
from dataclasses import dataclass

_ORIGINAL_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
_FIELD = re.compile(r"^([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)$")


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
    report = next((p for p in _parts(message) if p.get_content_type() == "multipart/report"), None)
    if report is None or str(report.get_param("report-type", "")).lower() != "feedback-report":
        return None
    fields: dict[str, list[str]] | None = None
    original: email.message.Message | None = None
    for part in _parts(report):
        content_type = part.get_content_type()
        if content_type == "message/feedback-report" and fields is None:
            fields = _fields(_part_text(part))
        elif content_type in _ORIGINAL_TYPES and original is None:
            original = part
        elif content_type == "text/plain" and fields is None:
            candidate = _fields(_part_text(part))
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
        match = _FIELD.match(line)
        if match:
            value = " ".join(match.group(2).split())
            fields.setdefault(match.group(1).lower(), []).append(value)
    return fields


def _original_headers(part: email.message.Message | None) -> str | None:
    if part is None:
        return None
    inner_messages = _subparts(part)
    if inner_messages:
        lines = [f"{name}: {_raw(value)}" for name, value in inner_messages[0].raw_items()]
        return re.sub(r"\r\n?", "\n", "\n".join(lines)) or None
    text = re.sub(r"\r\n?", "\n", _part_text(part)).lstrip("\n")
    block = text.split("\n\n", 1)[0].rstrip("\n")
    return block if block and _FIELD.match(block.split("\n", 1)[0]) else None


def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    # Not into attached messages: the original may itself be a report.
    yield message
    if message.get_content_maintype() == "multipart":
        for part in _subparts(message):
            yield from _parts(part)


def _subparts(part: email.message.Message) -> list[email.message.Message]:
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [p for p in payload if isinstance(p, email.message.Message)]


def _content(part: email.message.Message) -> bytes:
    data = None if part.is_multipart() else part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _part_text(part: email.message.Message) -> str:
    if part.is_multipart():  # message/* parts arrive parsed as messages
        blocks = []
        for block in _subparts(part):
            head = "\n".join(f"{name}: {_raw(value)}" for name, value in block.raw_items())
            blocks.append(head + "\n\n" + _content(block).decode("utf-8", "replace"))
        return "\n\n".join(blocks)
    return _decode(_content(part), part.get_content_charset())


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:  # "unknown-8bit" and other labels Python has no codec for
        return data.decode("utf-8", "replace")


def _raw(value: object) -> str:
    # compat32 keeps undecodable header bytes as surrogate escapes; recover them as UTF-8.
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bare_address(value: str | None) -> str | None:
    if value is None:
        return None
    address = value.strip().removeprefix("<").removesuffix(">").strip()
    return address or None
