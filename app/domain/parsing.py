"""Parsing any raw message — hostile inbound mail or our own — into plain data.

``parse_message`` never raises. The MIME tree comes from the stdlib parser (``policy.default``);
header values are read from the raw header lines and decoded here (8-bit UTF-8 or windows-1252
bytes, RFC 2047 encoded words, folding), because the stdlib header classes raise or mangle on
the malformed headers real mail carries. Bodies are decoded with charset fallbacks.

One module although over 400 lines: headers and body parts are read by one walk of one parsed
tree under one "never raise" policy, and its helpers make sense only inside that walk.
"""

from __future__ import annotations

import binascii
import html
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import Message
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import pybase64

from app.domain.addresses import Address, parse_header_addresses
from app.domain.conversations import normalize_message_id, parse_message_ids
from app.domain.encoded_words import decode_charset, decode_header_words
from app.domain.html_safety import HtmlListener, html_to_text
from app.domain.mime_fast import parse_bytes

# Headers kept for later decisions: list handling, auto-reply loops (RFC 3834), bounces, auth.
SELECTED_HEADERS = (
    "list-id", "list-unsubscribe", "list-unsubscribe-post", "list-post", "auto-submitted",
    "precedence", "content-type", "x-mailer", "user-agent", "return-path",
    "authentication-results", "received-spf", "feedback-id", "x-auto-response-suppress",
    "x-autoreply", "delivered-to", "x-original-to", "x-failed-recipients",
)  # fmt: skip
MAX_SELECTED_HEADER_CHARS = 4096  # a hostile 1 MB header must not be copied into every document
MAX_MIME_DEPTH = 40
_SERIALIZE_POLICY = email_policy.compat32.clone(linesep="\r\n", mangle_from_=False)
_MIME_TYPES = mimetypes.MimeTypes(filenames=())  # built-in table only: same names everywhere
_EXTENSIONS = {"text/calendar": ".ics", "text/vcard": ".vcf", "text/x-vcard": ".vcf"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
TEXT_PART_SEPARATOR = "\n\n"  # between inline parts in the text body
HTML_PART_SEPARATOR = "\n<hr>\n"  # between inline parts in the HTML body
_SHARED_HEADER_CHARS = 1000  # longer header values are parsed afresh, never remembered


class _ParsePolicy(email_policy.EmailPolicy):
    """``email.policy.default``, remembering the header objects it parses.

    The stdlib parses a header into a new object on every ``get()``: Content-Type alone several
    times per part (the parser's multipart and boundary checks, then type, charset, name and
    format=flowed here), and that is most of the cost of parsing a short message. A header
    object depends only on its name and value and is never changed once made, so one shared
    object per distinct short value gives the same results.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if (
            self is _PARSE_POLICY
            and type(value) is str  # not already a header object
            and len(value) <= _SHARED_HEADER_CHARS
        ):
            return _parsed_header(name, value)
        return super().header_fetch_parse(name, value)


_PARSE_POLICY = _ParsePolicy()  # the defaults, as email.policy.default


@lru_cache(maxsize=2048)
def _parsed_header(name: str, value: str) -> Any:
    return email_policy.EmailPolicy.header_fetch_parse(_PARSE_POLICY, name, value)


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None  # without angle brackets, as used in "cid:" URLs (RFC 2392)
    inline: bool = False


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    text_body: str | None
    html_body: str | None  # raw: sanitized when it leaves the API
    attachments: tuple[ParsedAttachment, ...]
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0


def parse_tree(raw: bytes) -> Message | None:
    """The MIME tree ``parse_message`` reads (``email.policy.default``'s message classes),
    or None when the parser itself fails on ``raw``. Read it, do not change it: another
    reader of the same message (the spam model) can then skip its own parse."""
    try:
        return parse_bytes(raw, _PARSE_POLICY)
    except Exception:  # hostile input: parse_message reports it as unparseable
        return None


def parse_message(
    raw: bytes, *, html_listener: HtmlListener | None = None, tree: Message | None = None
) -> ParsedMessage:
    """Parse raw RFC 5322 bytes into a ``ParsedMessage``; never raises on malformed input.

    Bodies: every text/plain and text/html part that is not an attachment, in order (see
    ``_bodies``; text derived from HTML when there is no text part), with "\n" line breaks and
    no trailing ones. Attachments:
    parts with a filename or ``Content-Disposition: attachment``, non-text leaves, and nested
    messages (named after their subject). A message the parser cannot make sense of at all comes
    back with its raw bytes as the text body.

    ``html_listener`` sees the parse of each HTML part the text body is rendered from
    (``html_to_text``). ``tree``: ``parse_tree(raw)``, when the caller has it already.
    """
    try:
        return _parse(raw, html_listener, tree)
    except Exception:  # last line of defence for hostile input
        return _unparseable(raw)


def _parse(raw: bytes, html_listener: HtmlListener | None, tree: Message | None) -> ParsedMessage:
    msg = tree if tree is not None else parse_bytes(raw, _PARSE_POLICY)
    body = _Bodies()
    _collect(msg, body, depth=0)
    text_body, html_body = _bodies(msg, html_listener)
    if html_body is not None and (text_body is None or not text_body.strip()):
        text_body = html_to_text(html_body)
    references = parse_message_ids(header_text(msg, "references", decode_words=False))
    in_reply_to_ids = parse_message_ids(header_text(msg, "in-reply-to", decode_words=False))
    return ParsedMessage(
        message_id=normalize_message_id(header_text(msg, "message-id", decode_words=False)),
        in_reply_to=in_reply_to_ids[0] if in_reply_to_ids else None,
        references=references,
        subject=header_text(msg, "subject") or "",
        from_=_first(_addresses(msg, "from")),
        sender=_first(_addresses(msg, "sender")),
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        bcc=_addresses(msg, "bcc"),
        reply_to=_addresses(msg, "reply-to"),
        date=_date(header_text(msg, "date")),
        text_body=text_body,
        html_body=html_body,
        attachments=tuple(body.attachments),
        headers=_selected_headers(msg),
        size=len(raw),
    )


def attachment_data(raw: bytes, index: int) -> bytes | None:
    """The decoded bytes of ``parse_message(raw).attachments[index]``, or None when ``raw``
    has no such attachment. Received messages keep their attachments only inside their raw
    MIME (docs/inbound.md, "Attachments"); a download reads them back through this, the same
    parse that listed them."""
    try:
        body = _Bodies()
        _collect(parse_bytes(raw, _PARSE_POLICY), body, depth=0)
    except Exception:  # hostile input: parse_message found no attachments in it either
        return None
    return body.attachments[index].data if 0 <= index < len(body.attachments) else None


def _unparseable(raw: bytes) -> ParsedMessage:
    return ParsedMessage(
        message_id=None,
        in_reply_to=None,
        references=(),
        subject="",
        from_=None,
        sender=None,
        to=(),
        cc=(),
        bcc=(),
        reply_to=(),
        date=None,
        text_body=_normalize_newlines(decode_charset(raw, None)),
        html_body=None,
        attachments=(),
        headers={},
        size=len(raw),
    )


# --- headers -----------------------------------------------------------------------------------


def header_text(msg: Message, name: str, *, decode_words: bool = True) -> str | None:
    """The first ``name`` header as clean text: unfolded, 8-bit bytes and encoded words decoded.

    Read from the raw header line, so a malformed value never raises.
    """
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return _clean_header(str(value), decode_words)
    return None


def _clean_header(value: str, decode_words: bool) -> str:
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        # Raw 8-bit header bytes (RFC 6532 UTF-8, or legacy windows-1252) arrive surrogate-escaped.
        value = decode_charset(value.encode("ascii", "surrogateescape"), "utf-8")
    value = re.sub(r"\r?\n(?=[ \t])", "", value)  # unfold (RFC 5322 §2.2.3)
    value = value.replace("\r", " ").replace("\n", " ")
    if decode_words:
        value = decode_header_words(value)
    return _CONTROL.sub("", value).strip()


def _addresses(msg: Message, name: str) -> tuple[Address, ...]:
    # Encoded words are decoded per display name after splitting, so an encoded comma
    # cannot split one address into two.
    return tuple(parse_header_addresses(header_text(msg, name, decode_words=False)))


def _first(addresses: tuple[Address, ...]) -> Address | None:
    return addresses[0] if addresses else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # ValueError, TypeError, IndexError, OverflowError...
        return None
    if parsed.tzinfo is None:  # "-0000": time is UTC, zone unknown (RFC 5322 §3.3)
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _selected_headers(msg: Message) -> dict[str, str]:
    selected: dict[str, str] = {}
    for key, value in msg.raw_items():
        lower = key.lower()
        if lower in SELECTED_HEADERS and lower not in selected:
            selected[lower] = _clean_header(str(value), True)[:MAX_SELECTED_HEADER_CHARS]
    return selected


# --- body parts ----------------------------------------------------------------------------------


@dataclass
class _Bodies:
    attachments: list[ParsedAttachment] = field(default_factory=list)


def _collect(part: Message, body: _Bodies, depth: int) -> None:
    for leaf in _leaves(part, depth):
        try:
            _collect_leaf(leaf, body)
        except Exception:  # one hostile part must not cost us the others
            continue


def _collect_leaf(leaf: Message, body: _Bodies) -> None:
    ctype = _content_type(leaf)
    disposition = _disposition(leaf)
    filename = _filename(leaf)
    if ctype.startswith("message/"):
        body.attachments.append(_message_attachment(leaf, ctype, filename, disposition))
    elif not _is_inline_text(ctype, filename, disposition):  # those are the bodies
        body.attachments.append(_attachment(leaf, ctype, filename, disposition, body))


def _is_inline_text(ctype: str, filename: str | None, disposition: str | None) -> bool:
    is_body_type = ctype in ("text/plain", "text/html") or ctype.startswith("multipart/")
    return is_body_type and not filename and disposition != "attachment"


# --- the bodies: every inline text part, as mail clients show them -------------------------------


@dataclass(frozen=True)
class _TextPart:
    text: str
    is_html: bool
    # An HTML part's text as decoded, before its line breaks were normalized: what the text
    # body is rendered from (the rendering is the same), and what the spam model decodes too,
    # so that one parse serves both (``html_listener``).
    source: str = ""


@dataclass(frozen=True)
class _Rendering:
    """The inline text parts of a subtree, in order: as read for the text body and for the HTML
    body (they differ only where a multipart/alternative offers a choice)."""

    for_text: tuple[_TextPart, ...] = ()
    for_html: tuple[_TextPart, ...] = ()


_NOTHING = _Rendering()


def _bodies(part: Message, html_listener: HtmlListener | None) -> tuple[str | None, str | None]:
    """The text and HTML bodies: every inline text part in order, joined by a separator.

    multipart/alternative contributes one alternative (the last plain one to the text body, the
    last with HTML to the HTML body: RFC 2046 §5.1.4 puts the richest last), multipart/related
    its first shown part (the rest are its resources), every other multipart all its parts
    (RFC 2046 §5.1.3). A plain part joins the HTML body escaped; an HTML part joins the text
    body as its text. No HTML part at all: no HTML body.
    """
    rendering = _render(part, depth=0)
    text_body = TEXT_PART_SEPARATOR.join(
        html_to_text(p.source, html_listener) if p.is_html else p.text for p in rendering.for_text
    )
    html_body = None
    if any(p.is_html for p in rendering.for_html):
        html_body = HTML_PART_SEPARATOR.join(
            p.text if p.is_html else _plain_as_html(p.text) for p in rendering.for_html
        )
    return (text_body if rendering.for_text else None), html_body


def _render(part: Message, depth: int) -> _Rendering:
    ctype = _content_type(part)
    if ctype.startswith("message/") and depth > 0:
        return _NOTHING  # a nested message is an attachment, not our body
    if part.is_multipart():  # checked first: get_payload() of a leaf decodes and may raise
        if depth >= MAX_MIME_DEPTH:
            return _NOTHING
        children = [
            _render(sub, depth + 1) for sub in part.get_payload() if isinstance(sub, Message)
        ]
        shown = [child for child in children if child.for_text or child.for_html]
        if not shown:
            return _NOTHING
        if ctype == "multipart/alternative":
            plain = [c for c in shown if not any(p.is_html for p in c.for_text)]
            rich = [c for c in shown if any(p.is_html for p in c.for_html)]
            return _Rendering((plain or shown)[-1].for_text, (rich or shown)[-1].for_html)
        if ctype == "multipart/related":
            return shown[0]
        return _Rendering(
            tuple(p for child in shown for p in child.for_text),
            tuple(p for child in shown for p in child.for_html),
        )
    try:
        if not _is_inline_text(ctype, _filename(part), _disposition(part)):
            return _NOTHING
        source = _decode_text(part)
        text = _normalize_newlines(source).rstrip("\n")
        if ctype == "text/plain":
            text = _unflow(text, part)
    except Exception:  # one hostile part must not cost us the others
        return _NOTHING
    is_html = ctype == "text/html"
    piece = (_TextPart(text, is_html, source if is_html else ""),)
    return _Rendering(piece, piece)


def _plain_as_html(text: str) -> str:
    return f'<div style="white-space: pre-wrap">{html.escape(text, quote=False)}</div>'


def _leaves(part: Message, depth: int) -> Iterator[Message]:
    """Leaf parts in order; nested messages are leaves (their parts are not our body)."""
    if _content_type(part).startswith("message/") and depth > 0:
        yield part
        return
    if part.is_multipart():  # checked first: get_payload() of a leaf decodes and may raise
        if depth >= MAX_MIME_DEPTH:
            return
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub, depth + 1)
        return
    yield part


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # malformed header parameters
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # malformed header parameters
        raw = header_text(part, "content-disposition") or ""
        return raw.split(";", 1)[0].strip().lower() or None


def _filename(part: Message) -> str | None:
    """Filename from Content-Disposition or Content-Type (RFC 2231, or RFC 2047 as sent by
    Outlook), reduced to a safe base name."""
    name: str | None
    try:
        name = part.get_filename() or part.get_param("name")  # type: ignore[assignment]
        if isinstance(name, tuple):  # compat RFC 2231 triple
            name = decode_charset((name[2] or "").encode("latin-1", "replace"), name[0])
    except Exception:  # malformed parameters: read the raw header instead
        raw = (
            (header_text(part, "content-disposition") or "")
            + ";"
            + (header_text(part, "content-type") or "")
        )
        match = re.search(r"""(?:file)?name\*?=\s*"?([^";]+)"?""", raw, re.I)
        name = match.group(1) if match else None
    if not name:
        return None
    return safe_filename(decode_header_words(str(name)))


def safe_filename(name: str) -> str | None:
    """A base name safe to offer for download: no directories, control characters or dot-names."""
    base = re.split(r"[/\\]", name)[-1]
    base = _FILENAME_UNSAFE.sub("", base).strip().strip(".").strip()
    if not base:
        return None
    if len(base) > 255:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 255 - len(ext) - 1] + "." + ext) if dot and len(ext) < 16 else base[:255]
    return base


def _decode_text(part: Message) -> str:
    data = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:  # malformed header parameters
        charset = None
    if charset is None and _content_type(part) == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        charset = meta.group(1).decode("ascii") if meta else None
    return decode_charset(data, charset)


def _payload_bytes(part: Message) -> bytes:
    try:
        data = decoded_payload(part)
    except Exception:  # an undecodable payload
        data = None
    if isinstance(data, bytes):
        return data
    raw = getattr(part, "_payload", None)  # the undecoded text, when decoding itself failed
    if isinstance(raw, str):
        return raw.encode("ascii", "surrogateescape")
    return b""


def decoded_payload(part: Message) -> Any:
    """``part.get_payload(decode=True)``, with a canonical base64 body decoded by pybase64
    (``_canonical_base64``): the same bytes, a fraction of the time. Storage's parse and the
    spam model's reading (``ml.message_text``) both decode through here."""
    fast = _canonical_base64(part)
    return fast if fast is not None else part.get_payload(decode=True)


def _canonical_base64(part: Message) -> bytes | None:
    """``part.get_payload(decode=True)`` of a base64 part whose body is canonical base64 (what
    ``b64encode`` writes, in lines), by pybase64's SIMD decoder; None for any other part.

    The email package decodes a base64 body as ``b"".join(body.splitlines())`` (the body's
    ASCII bytes), then ``binascii.a2b_base64(..., strict_mode=True)``: 1.2 + 2.2 ms for the
    inbound mix's 1 MB attachment, a third of the MX's parse of such a message. Here the line
    breaks go in one ``translate`` (``bytes.splitlines`` splits at CR, LF and CRLF only, so
    deleting CR and LF joins the same lines) and pybase64 decodes (0.04 ms). A body that decodes
    and re-encodes to exactly its input is canonical: strict binascii decodes it to the same
    bytes and reports no defect (``email._encoded_words.decode_b``). Anything else (not ASCII,
    bad characters, padding inside, a length that is not a multiple of four, non-zero spare
    bits) is left to the email package, which also records its defects on the part.
    """
    if str(part.get("content-transfer-encoding", "")).lower() != "base64" or part.is_multipart():
        return None
    body = part.get_payload()
    if not isinstance(body, str) or not body.isascii():
        return None
    encoded = body.encode("ascii").translate(None, b"\r\n")
    try:
        data = pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if pybase64.b64encode(data) == encoded else None


def _attachment(
    part: Message, ctype: str, filename: str | None, disposition: str | None, body: _Bodies
) -> ParsedAttachment:
    content_id = _content_id(part)
    inline = disposition == "inline" or (
        disposition is None and content_id is not None and ctype.startswith("image/")
    )
    name = filename or _generated_name(ctype, len(body.attachments) + 1)
    return ParsedAttachment(
        filename=name,
        content_type=ctype,
        data=_payload_bytes(part),
        content_id=content_id,
        inline=inline,
    )


def _message_attachment(
    part: Message, ctype: str, filename: str | None, disposition: str | None
) -> ParsedAttachment:
    """A nested message (forwarded as attachment, or a DSN's parts) as its serialized bytes."""
    payload = part.get_payload() if part.is_multipart() else None
    data = b""
    subject = ""
    if isinstance(payload, list):
        chunks = []
        for sub in payload:
            if isinstance(sub, Message):
                chunks.append(_serialize(sub))
        data = b"".join(chunks)
        first = payload[0] if payload else None
        if ctype in ("message/rfc822", "message/global") and isinstance(first, Message):
            subject = header_text(first, "subject") or ""
    else:
        data = _payload_bytes(part)
    if filename:
        name = filename
    elif ctype in ("message/rfc822", "message/global"):
        name = safe_filename(f"{subject[:200] or 'message'}.eml") or "message.eml"
    else:
        name = _generated_name(ctype, 1)
    return ParsedAttachment(
        filename=name,
        content_type=ctype,
        data=data,
        content_id=_content_id(part),
        inline=disposition == "inline",
    )


def _serialize(msg: Message) -> bytes:
    try:
        return msg.as_bytes(policy=_SERIALIZE_POLICY)
    except Exception:  # re-serializing hostile input can fail; keep what we can
        try:
            return msg.as_string(policy=_SERIALIZE_POLICY).encode("utf-8", "surrogateescape")
        except Exception:  # give up on this nested message
            return b""


def _content_id(part: Message) -> str | None:
    value = header_text(part, "content-id", decode_words=False)
    if not value:
        return None
    return value.strip().strip("<>").strip() or None


def _generated_name(ctype: str, n: int) -> str:
    extension = _EXTENSIONS.get(ctype) or _MIME_TYPES.guess_extension(ctype)
    if not extension and ctype.startswith(("text/", "message/")):
        extension = ".txt"
    stem = ctype.split("/", 1)[-1] if ctype.startswith("message/") else f"attachment-{n}"
    return f"{stem}{extension or '.bin'}"


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, part: Message) -> str:
    """Undo RFC 3676 format=flowed: a line ending in a space continues on the next line."""
    try:
        flowed = (part.get_param("format") or "").lower() == "flowed"  # type: ignore[union-attr]
        delsp = (part.get_param("delsp") or "").lower() == "yes"  # type: ignore[union-attr]
    except Exception:  # malformed header parameters
        return text
    if not flowed:
        return text
    out: list[str] = []
    out_depths: list[int] = []
    joining = False
    for raw_line in text.split("\n"):
        depth = len(raw_line) - len(raw_line.lstrip(">"))
        line = raw_line[depth:]
        if line.startswith(" "):  # space-stuffing (RFC 3676 §4.4)
            line = line[1:]
        soft = line.endswith(" ") and line != "-- "
        if soft and delsp:
            line = line[:-1]
        # RFC 3676 §4.5: only lines of the same quote depth join.
        if joining and out and out_depths[-1] == depth:
            out[-1] += line
        else:
            out.append(line)
            out_depths.append(depth)
        joining = soft
    return "\n".join(
        (">" * depth + " " + line if depth else line)
        for line, depth in zip(out, out_depths, strict=True)
    )
