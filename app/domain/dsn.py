"""Delivery status notifications (RFC 3464), read; outgoing_dsn.py writes ours.

Remote MTAs return our mail as ``multipart/report; report-type=delivery-status`` (RFC 6522)
whose machine-readable part lists one field group per recipient. Real reports bend the format
(status parts typed text/plain, missing blank lines between groups, folded lines, "rfc822;"
prefixes, upper-case actions), so the field parser keys on field names, not on layout. Bounces
that are not reports at all (qmail, old Exim, appliances) get a best-effort text scan.
"""

from __future__ import annotations

import email
import email.message
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

from app.domain.report_parts import FIELD, ORIGINAL_TYPES, part_text, parts, raw_header, subparts

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})


@dataclass(frozen=True)
class RecipientReport:
    final_recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded (RFC 3464 §2.3.3)
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    diagnostic_code: str | None  # the remote reply without its type: "550 5.1.1 ..."
    remote_mta: str | None  # host name without its type
    original_recipient: str | None = None


@dataclass(frozen=True)
class ParsedDsn:
    reporting_mta: str | None
    original_envelope_id: str | None
    recipients: tuple[RecipientReport, ...]
    original_message_id: str | None  # as written, with angle brackets
    original_headers: str | None  # the original's header block, "\n" line endings


# --------------------------------------------------------------------------- reading

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")  # RFC 3464, 6533
# Fields that describe the whole message (RFC 3464 §2.2); everything else listed is per recipient.
_PER_MESSAGE = frozenset(
    {
        "reporting-mta",
        "dsn-gateway",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
        "x-original-message-id",  # Gmail
    }
)
_PER_RECIPIENT = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
    }
)
_ADDRESS_FIELDS = frozenset({"original-recipient", "final-recipient"})
STATUS_CODE = re.compile(  # an RFC 3463 enhanced status code
    r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)"
)


def parse_dsn(raw: bytes) -> ParsedDsn | None:
    """The delivery report in a bounce, or None if the message is not a bounce.

    ``multipart/report; report-type=delivery-status`` is parsed per RFC 3464; other report types
    (ARF complaints, read receipts) give None. Anything else that looks like a bounce (sent by
    MAILER-DAEMON or postmaster, a bounce subject, Exim's X-Failed-Recipients) is scanned for
    recipient addresses followed by SMTP replies, each reported as ``failed`` (or ``delayed`` for
    delay warnings).
    """
    message = email.message_from_bytes(raw)
    report = next((p for p in parts(message) if p.get_content_type() == "multipart/report"), None)
    if report is not None:
        if str(report.get_param("report-type", "")).lower() != "delivery-status":
            return None
        parsed = _parse_report(report)
        if parsed is not None:
            return parsed
    return _parse_plain_bounce(message)


def _parse_report(report: email.message.Message) -> ParsedDsn | None:
    status_text: str | None = None
    original: email.message.Message | None = None
    for index, part in enumerate(parts(report)):
        content_type = part.get_content_type()
        if content_type in _STATUS_TYPES and status_text is None:
            status_text = part_text(part)
        elif content_type in ORIGINAL_TYPES and original is None:
            original = part
        elif content_type == "text/plain" and status_text is None and index > 1:
            # Mislabelled status part: RFC 6522 puts the machine-readable part second.
            text = part_text(part)
            if re.search(r"^(final|original)-recipient\s*:", text, re.I | re.M):
                status_text = text
    if status_text is None:
        return None
    per_message, groups = _parse_status_fields(status_text)
    recipients = tuple(r for r in map(_recipient_from_fields, groups) if r is not None)
    if not recipients:
        return None
    original_headers, original_id = _original_of(original)
    return ParsedDsn(
        reporting_mta=_strip_type(per_message.get("reporting-mta")),
        original_envelope_id=_xtext_decode(per_message.get("original-envelope-id")),
        recipients=recipients,
        original_message_id=original_id or per_message.get("x-original-message-id"),
        original_headers=original_headers,
    )


def _parse_status_fields(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields and per-recipient groups, tolerant of missing blank lines.

    A new recipient group starts when a field repeats within the current group, or when a
    recipient address field arrives after the current group already has its Action/Status. That
    splits groups that run together without blank lines, in RFC 3464 order (Original-Recipient
    first) as well as Postfix's (Final-Recipient first). Unknown fields are ignored.
    """
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", text)
    per_message: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in unfolded.splitlines():
        match = FIELD.match(line)
        if not match:
            continue
        name, value = match.group(1).lower(), " ".join(match.group(2).split())
        if name in _PER_MESSAGE:
            per_message.setdefault(name, value)
        elif name in _PER_RECIPIENT:
            if (
                current is None
                or name in current
                or (name in _ADDRESS_FIELDS and any(k not in _ADDRESS_FIELDS for k in current))
            ):
                current = {}
                groups.append(current)
            current[name] = value
    return per_message, groups


def _recipient_from_fields(fields: dict[str, str]) -> RecipientReport | None:
    final = _address_value(fields.get("final-recipient"))
    original = _address_value(fields.get("original-recipient"))
    if not (final or original):
        return None
    diagnostic = _strip_type(fields.get("diagnostic-code"))
    status_match = STATUS_CODE.search(fields.get("status", "")) or STATUS_CODE.search(
        diagnostic or ""
    )
    action = fields.get("action", "").split(" ")[0].lower()
    if action not in ACTIONS:
        if status_match is None:
            return None
        action = {"5": "failed", "4": "delayed", "2": "delivered"}[status_match.group(1)]
    if status_match is not None:
        status = ".".join(str(int(g)) for g in status_match.groups())
    else:
        status = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
    return RecipientReport(
        final_recipient=final or original or "",
        action=action,
        status=status,
        diagnostic_code=diagnostic,
        remote_mta=_strip_type(fields.get("remote-mta")),
        original_recipient=original,
    )


# Bounce texts that are not RFC 3464 reports ----------------------------------------------

_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|returned to sender|delivery (status )?notification"
    r"|delivery fail|failure notice|mail delivery failed|could not be delivered|non.?delivery"
    r"|delayed mail|message delayed|delivery delayed",
    re.I,
)
_DELAY_SUBJECT = re.compile(r"delay|warning|still trying|not yet been delivered", re.I)
# Where bouncers paste the returned message: qmail, Exim, Postfix, Sendmail, Exchange 2003.
_ORIGINAL_MARKER = re.compile(
    r"^\s*-+\s*(below this line is a copy of the message|this is a copy of the message"
    r"|original message|the original message|returned message|original message follows"
    r"|message headers follow|original message headers)[^\n]*$",
    re.I | re.M,
)
_ANCHOR = re.compile(
    r"^\s*<?(?P<addr>[^\s<>@\"():;,]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,})>?"
    r"\s*(?::|\.\.\.|$)(?P<rest>.*)$"
)
_DIAGNOSTIC = re.compile(r"(?:^|:)\s*(?P<code>[45]\d\d)(?P<sep>[ -])(?P<text>.*)$")
_STATUS_PREFIX = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s*")
_HASHSTATUS_CODE = re.compile(  # an RFC 3463 enhanced status code
    r"\(#(?P<status>[45]\.\d{1,3}\.\d{1,3})\)"
)


def _parse_plain_bounce(message: email.message.Message) -> ParsedDsn | None:
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    subject = str(message.get("Subject", ""))
    failed_header = message.get_all("X-Failed-Recipients") or []
    looks_like_bounce = (
        sender.partition("@")[0] in _DAEMON_LOCAL_PARTS
        or _BOUNCE_SUBJECT.search(subject) is not None
        or bool(failed_header)
    )
    if not looks_like_bounce:
        return None
    text = next((part_text(p) for p in parts(message) if p.get_content_type() == "text/plain"), "")
    marker = _ORIGINAL_MARKER.search(text)
    human = text[: marker.start()] if marker else text
    attached = next((p for p in parts(message) if p.get_content_type() in ORIGINAL_TYPES), None)
    if attached is not None:
        original_headers, original_id = _original_of(attached)
    elif marker is not None:
        original_headers, original_id = _headers_from_text(text[marker.end() :])
    else:
        original_headers, original_id = None, None

    ourselves = {sender, parseaddr(str(message.get("To", "")))[1].lower()}
    diagnostics = _diagnostics_by_recipient(human, ourselves)
    if not diagnostics:
        wanted = [a for _, a in getaddresses([str(v) for v in failed_header]) if a]
        fallback = _first_diagnostic(human.splitlines())
        diagnostics = {a: fallback for a in wanted} if fallback else {}
    if not diagnostics:
        return None
    action = "delayed" if _DELAY_SUBJECT.search(subject) else "failed"
    recipients = tuple(
        RecipientReport(
            final_recipient=addr,
            action=action,
            status=status,
            diagnostic_code=diagnostic,
            remote_mta=None,
        )
        for addr, (status, diagnostic) in diagnostics.items()
    )
    return ParsedDsn(None, None, recipients, original_id, original_headers)


def _diagnostics_by_recipient(human: str, ourselves: set[str]) -> dict[str, tuple[str, str | None]]:
    """Recipient address → (status, diagnostic) for addresses that start a line of the text.

    qmail ("<bob@x>:" then "Remote host said: 550 ..."), Exim ("  bob@x" then the SMTP error),
    Postfix's text part ("<bob@x>: host ... said: 550 ...") and Gmail's legacy bounce all name
    the recipient at the start of a line and the reply after it.
    """
    lines = human.splitlines()
    anchors: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = _ANCHOR.match(line)
        if match and match.group("addr").lower() not in ourselves:
            anchors.append((index, match.group("addr")))
    overall = _first_diagnostic(lines)
    found: dict[str, tuple[str, str | None]] = {}
    for position, (index, addr) in enumerate(anchors):
        end = anchors[position + 1][0] if position + 1 < len(anchors) else len(lines)
        first = _ANCHOR.match(lines[index])
        segment = [first.group("rest") if first else "", *lines[index + 1 : end]]
        result = _first_diagnostic(segment) or overall
        if result is not None and addr.lower() not in {a.lower() for a in found}:
            found[addr] = result
    return found


def _first_diagnostic(lines: Sequence[str]) -> tuple[str, str | None] | None:
    for index, line in enumerate(lines):
        match = _DIAGNOSTIC.search(line)
        if match:
            code, parts = match.group("code"), [match.group("text").strip()]
            for follow in lines[index + 1 :]:
                cont = re.match(rf"\s*{code}([ -])(.*)$", follow)
                if not cont:
                    break
                parts.append(cont.group(2).strip())
            # Continuation lines repeat the enhanced code ("550-5.1.1 ..."): keep it once.
            texts = [parts[0], *(_STATUS_PREFIX.sub("", p) for p in parts[1:])]
            diagnostic = f"{code} " + " ".join(t for t in texts if t)
            status = STATUS_CODE.search(parts[0])
            if status is None or status.group(1) != code[0]:
                return f"{code[0]}.0.0", diagnostic
            return ".".join(str(int(g)) for g in status.groups()), diagnostic
        hashed = _HASHSTATUS_CODE.search(line)
        if hashed:
            return hashed.group("status"), " ".join(line.split())
    return None


# Shared helpers -------------------------------------------------------------------------------


def _original_of(part: email.message.Message | None) -> tuple[str | None, str | None]:
    if part is None:
        return None, None
    inner_messages = subparts(part)
    if inner_messages:
        inner = inner_messages[0]
        lines = [f"{name}: {raw_header(value)}" for name, value in inner.raw_items()]
        headers = re.sub(r"\r\n?", "\n", "\n".join(lines))
        message_id = inner.get("Message-ID")
        return headers or None, " ".join(str(message_id).split()) if message_id else None
    return _headers_from_text(part_text(part))


def _headers_from_text(text: str) -> tuple[str | None, str | None]:
    text = re.sub(r"\r\n?", "\n", text).lstrip("\n")
    block = text.split("\n\n", 1)[0].rstrip("\n")
    if not FIELD.match(block.split("\n", 1)[0]):
        return None, None
    parsed = email.message_from_string(block + "\n\n")
    message_id = parsed.get("Message-ID")
    return block, " ".join(str(message_id).split()) if message_id else None


def _strip_type(value: str | None) -> str | None:
    """The value of a typed field ("dns; mx.example", "smtp; 550 ...") without its type."""
    if value is None:
        return None
    stripped = re.sub(r"^\s*[A-Za-z0-9-]+\s*;\s*", "", value).strip()
    return stripped or None


def _address_value(value: str | None) -> str | None:
    if value is None:
        return None
    address_type = value.split(";", 1)[0].strip().lower() if ";" in value else "rfc822"
    address = _strip_type(value) or ""
    address = address.strip().removeprefix("<").removesuffix(">").strip()
    if address_type == "utf-8":  # RFC 6533 §3: \x{HEX} escapes
        address = re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", lambda m: chr(int(m.group(1), 16)), address)
    return address or None


def _xtext_decode(value: str | None) -> str | None:
    # RFC 3461 §4: ENVID is xtext, "+HH" escapes.
    if value is None:
        return None
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
