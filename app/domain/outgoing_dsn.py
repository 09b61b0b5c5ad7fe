"""Delivery status notifications (RFC 3464) we write: when we give up on a recipient, or it
has been deferred for hours, the sender gets a DSN in their Inbox that threads with the original
(In-Reply-To/References) and carries the remote server's reply, per recipient, in both human and
machine-readable form. Reading remote DSNs is dsn.py.
"""

from __future__ import annotations

import hashlib
import quopri
import re
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from app.domain.dsn import ACTIONS, STATUS_CODE, RecipientReport
from app.domain.errors import ValidationError

KINDS = ("failure", "delay")

_SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delivery Status Notification (Delay)",
}
_STATUS_REASONS = {
    "1.1": "the recipient's mailbox does not exist",
    "1.2": "the recipient's domain does not exist or accepts no mail",
    "2.2": "the recipient's mailbox is full",
    "3.4": "the message is too large for the recipient's server",
    "4.1": "the recipient's server did not answer",
    "4.2": "the connection to the recipient's server was lost",
    "4.7": "the message could not be delivered in time",
}


def build_dsn(
    *,
    reporting_mta: str,
    from_address: str,
    to_address: str,
    original_headers: bytes,
    original_message_id: str | None,
    original_subject: str,
    recipients: Sequence[RecipientReport],
    arrival_date: datetime,
    message_id: str,
    now: datetime,
    kind: str = "failure",
    will_retry_until: datetime | None = None,
    original_envelope_id: str | None = None,
) -> bytes:
    """An RFC 3464 DSN to the original sender, as CRLF bytes.

    ``multipart/report; report-type=delivery-status`` with a human-readable text/plain part, the
    message/delivery-status part and the original's headers as text/rfc822-headers (headers only:
    the sender has the body in Sent, and returning it would double storage). ``kind`` is
    "failure" or "delay"; a delay DSN carries ``will_retry_until``. Naive datetimes are UTC.
    """
    if kind not in KINDS:
        raise ValidationError.on("kind", f"must be one of {', '.join(KINDS)}")
    if not recipients:
        raise ValidationError.on("recipients", "at least one recipient is required")
    for field, value in (
        ("reporting_mta", reporting_mta),
        ("from_address", from_address),
        ("to_address", to_address),
        ("message_id", message_id),
        ("original_message_id", original_message_id or ""),
        ("original_envelope_id", original_envelope_id or ""),
    ):
        if any(c in value for c in "\r\n\0"):
            raise ValidationError.on(field, "must not contain line breaks")
    for report in recipients:
        if report.action not in ACTIONS:
            raise ValidationError.on("recipients", f"unknown action {report.action!r}")
        if not STATUS_CODE.fullmatch(report.status):
            raise ValidationError.on("recipients", f"bad status {report.status!r}")

    status_part, global_status = _delivery_status(
        reporting_mta, recipients, arrival_date, now, will_retry_until, original_envelope_id
    )
    headers_part = _header_block(original_headers)
    text = _human_text(
        kind, reporting_mta, original_subject, recipients, arrival_date, will_retry_until
    )
    boundary = _boundary(message_id, text.encode() + status_part + headers_part)
    original_id = (
        _angle(original_message_id, "original_message_id") if original_message_id else None
    )

    lines = [
        f"From: Mail Delivery System <{from_address.strip()}>",
        f"To: {to_address.strip()}",
        f"Subject: {_SUBJECTS[kind]}",
        f"Date: {format_datetime(_utc(now))}",
        f"Message-ID: {_angle(message_id)}",
    ]
    if original_id:
        lines += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
    lines += [
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: never auto-answer this
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    delimiter = f"--{boundary}\r\n".encode()
    text_body, text_encoding = _text_body(text)
    status_type = "message/global-delivery-status" if global_status else "message/delivery-status"
    status_encoding = "8bit" if global_status else "7bit"
    headers_encoding = "7bit" if headers_part.isascii() else "8bit"
    return b"".join(
        [
            head,
            delimiter,
            b"Content-Description: Notification\r\n",
            b'Content-Type: text/plain; charset="utf-8"\r\n',
            f"Content-Transfer-Encoding: {text_encoding}\r\n\r\n".encode(),
            text_body,
            b"\r\n",
            delimiter,
            b"Content-Description: Delivery report\r\n",
            f"Content-Type: {status_type}\r\n".encode(),
            f"Content-Transfer-Encoding: {status_encoding}\r\n\r\n".encode(),
            status_part,
            b"\r\n",
            delimiter,
            b"Content-Description: Undelivered Message Headers\r\n",
            b"Content-Type: text/rfc822-headers\r\n",
            f"Content-Transfer-Encoding: {headers_encoding}\r\n\r\n".encode(),
            headers_part,
            b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
    )


def _delivery_status(
    reporting_mta: str,
    recipients: Sequence[RecipientReport],
    arrival_date: datetime,
    now: datetime,
    will_retry_until: datetime | None,
    original_envelope_id: str | None,
) -> tuple[bytes, bool]:
    """The message/delivery-status body (RFC 3464 §2.2, §2.3) and whether it needs RFC 6533."""
    blocks = [[f"Reporting-MTA: dns; {reporting_mta}"]]
    if original_envelope_id:
        blocks[0].append(f"Original-Envelope-Id: {original_envelope_id}")
    blocks[0].append(f"Arrival-Date: {format_datetime(_utc(arrival_date))}")
    global_status = False
    for report in recipients:
        block = []
        if report.original_recipient:
            block.append(f"Original-Recipient: {_typed_address(report.original_recipient)}")
        block += [
            f"Final-Recipient: {_typed_address(report.final_recipient)}",
            f"Action: {report.action}",
            f"Status: {report.status}",
        ]
        if report.remote_mta:
            block.append(f"Remote-MTA: dns; {report.remote_mta}")
        if report.diagnostic_code:
            block.append(f"Diagnostic-Code: smtp; {' '.join(report.diagnostic_code.split())}")
        block.append(f"Last-Attempt-Date: {format_datetime(_utc(now))}")
        if report.action == "delayed" and will_retry_until is not None:
            block.append(f"Will-Retry-Until: {format_datetime(_utc(will_retry_until))}")
        global_status = global_status or not all(line.isascii() for line in block)
        blocks.append(block)
    text = "\r\n\r\n".join("\r\n".join(_fold(line) for line in block) for block in blocks)
    return (text + "\r\n").encode("utf-8"), global_status


def _typed_address(address: str) -> str:
    address = address.strip().removeprefix("<").removesuffix(">")
    if any(c in address for c in "\r\n"):
        raise ValidationError.on("recipients", "addresses must not contain line breaks")
    if address.isascii():
        return f"rfc822; {address}"
    # RFC 6533 §3 utf-8-addr-unitext: UTF-8 as is, backslash and controls as \x{HEX}.
    escaped = "".join(f"\\x{{{ord(c):X}}}" if c == "\\" or ord(c) < 32 else c for c in address)
    return f"utf-8; {escaped}"


def _human_text(
    kind: str,
    reporting_mta: str,
    original_subject: str,
    recipients: Sequence[RecipientReport],
    arrival_date: datetime,
    will_retry_until: datetime | None,
) -> str:
    subject = " ".join(original_subject.split()) or "(no subject)"
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if kind == "failure":
        lines += [
            "Your message could not be delivered to one or more recipients.",
            "It has been returned to you; the details are below.",
        ]
    else:
        lines += ["Your message has not been delivered yet to the recipients below."]
        if will_retry_until is not None:
            until = format_datetime(_utc(will_retry_until))
            lines += [f"Delivery will be retried until {until}."]
        lines += ["You do not need to send it again."]
    lines += ["", f"  Subject: {subject}", f"  Sent:    {format_datetime(_utc(arrival_date))}", ""]
    for report in recipients:
        verb = "could not be delivered" if report.action == "failed" else "is delayed"
        lines.append(f"<{report.final_recipient}>: {verb} (status {report.status}).")
        if report.diagnostic_code:
            server = report.remote_mta or "the recipient's server"
            lines.append(f"    The server {server} replied:")
            lines += textwrap.wrap(
                report.diagnostic_code,
                76,
                initial_indent="    ",
                subsequent_indent="      ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        else:
            reason = _STATUS_REASONS.get(report.status.split(".", 1)[1], "delivery failed")
            lines.append(f"    Reason: {reason}.")
        lines.append("")
    lines.append("The headers of your original message are attached.")
    return "\n".join(lines) + "\n"


def _text_body(text: str) -> tuple[bytes, str]:
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return text.replace("\n", "\r\n").encode("ascii"), "7bit"
    encoded = quopri.encodestring(text.encode("utf-8"))
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), "quoted-printable"


def _header_block(original_headers: bytes) -> bytes:
    """The original's header section only, CRLF line endings, ending in one CRLF."""
    normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", original_headers)
    block = normalized.split(b"\r\n\r\n", 1)[0].rstrip(b"\r\n")
    return block + b"\r\n" if block else b""


def _fold(line: str, width: int = 78) -> str:
    """Fold a long field at spaces (RFC 5322 §2.2.3); unfolding restores it exactly."""
    out: list[str] = []
    start = line.find(":") + 2  # never leave the field name alone on its line
    while len(line) > width:
        cut = line.rfind(" ", start, width)
        if cut <= 0:
            cut = line.find(" ", max(width, start))
            if cut <= 0:
                break
        out.append(line[:cut])
        line, start = line[cut:], 1
    out.append(line)
    return "\r\n".join(out)


def _boundary(message_id: str, content: bytes) -> str:
    # Deterministic (same input, same bytes) and checked against the content it delimits.
    seed = hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()
    for attempt in range(100):
        boundary = f"=_dsn_{seed[attempt % 40 : attempt % 40 + 24]}_{attempt}"
        if boundary.encode() not in content:
            return boundary
    raise ValidationError.on("original_headers", "cannot choose a MIME boundary")


def _angle(message_id: str, field: str = "message_id") -> str:
    core = message_id.strip().removeprefix("<").removesuffix(">").strip()
    if not core or any(c.isspace() for c in core):
        raise ValidationError.on(field, "must be a Message-ID")
    return f"<{core}>"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
