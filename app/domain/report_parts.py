"""Reading multipart/report messages (RFC 6522): what DSNs (RFC 3464) and ARF complaints
(RFC 5965) share — walking their MIME parts and getting a part's text, however the stdlib
parser shaped it.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterator

# Content types of the part that carries the original message (or only its headers) in a
# DSN (RFC 3464 §2, RFC 6533 for the "global" ones) and an ARF report (RFC 5965 §2).
ORIGINAL_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)

# One "Name: value" header-style field line (report fields and original headers alike).
FIELD = re.compile(r"^([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)$")


def parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Depth-first MIME parts, not descending into attached messages (the original may be a
    bounce or report itself)."""
    yield message
    if message.get_content_maintype() == "multipart":
        for part in subparts(message):
            yield from parts(part)


def subparts(part: email.message.Message) -> list[email.message.Message]:
    """Parts of a multipart, or the blocks/message the parser made of a message/* part."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [p for p in payload if isinstance(p, email.message.Message)]


def content(part: email.message.Message) -> bytes:
    data = None if part.is_multipart() else part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def part_text(part: email.message.Message) -> str:
    """A part's content as text, whether the parser split it into header blocks or not
    (message/* parts arrive parsed as messages)."""
    if part.is_multipart():
        return "\n\n".join(block_text(block) for block in subparts(part))
    return decode(content(part), part.get_content_charset())


def block_text(block: email.message.Message) -> str:
    head = "\n".join(f"{name}: {raw_header(value)}" for name, value in block.raw_items())
    return head + "\n\n" + content(block).decode("utf-8", "replace")


def decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:  # "unknown-8bit" and other labels Python has no codec for
        return data.decode("utf-8", "replace")


def raw_header(value: object) -> str:
    # compat32 keeps undecodable header bytes as surrogate escapes; recover them as UTF-8.
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
