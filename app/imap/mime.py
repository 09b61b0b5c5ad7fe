"""The MIME structure of a stored raw message, byte-exact (RFC 3501 §6.4.5, §7.4.2).

Sections (``BODY[1.2.HEADER]``…) are slices of the stored bytes, never re-serialised, so what
a client downloads is exactly what was received. ENVELOPE and BODYSTRUCTURE are built from the
same slices with the standard library's header parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from app.imap.protocol import plist, quote

_BLANK = re.compile(rb"\r?\n\r?\n")
_HEADER_PARSER = BytesHeaderParser(policy=compat32)
MAX_DEPTH = 20


@dataclass
class Part:
    header: bytes  # including the blank line that ends it
    body: bytes
    headers: Message
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the encapsulated message of a message/rfc822 part

    @property
    def content_type(self) -> tuple[str, str]:
        maintype = self.headers.get_content_maintype() if self.headers.get("content-type") else None
        if maintype is None:
            return ("text", "plain")
        return maintype.lower(), self.headers.get_content_subtype().lower()

    @property
    def params(self) -> list[tuple[str, str]]:
        params = self.headers.get_params() or []
        return [(k, v) for k, v in params[1:] if isinstance(v, str)]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    if raw.startswith((b"\r\n", b"\n")):
        cut = 2 if raw.startswith(b"\r\n") else 1
        return raw[:cut], raw[cut:]
    match = _BLANK.search(raw)
    if not match:
        return raw, b""
    return raw[: match.end()], raw[match.end() :]


def parse(raw: bytes, depth: int = 0) -> Part:
    header, body = split_header(raw)
    part = Part(header, body, _HEADER_PARSER.parsebytes(header))
    if depth >= MAX_DEPTH:
        return part
    maintype, subtype = part.content_type
    if maintype == "multipart":
        boundary = part.headers.get_param("boundary")
        if isinstance(boundary, str) and boundary:
            part.children = [parse(p, depth + 1) for p in _split_multipart(body, boundary)]
    elif (maintype, subtype) == ("message", "rfc822"):
        part.message = parse(body, depth + 1)
    return part


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    delimiter = re.compile(
        rb"(?:^|\r?\n)--"
        + re.escape(boundary.encode("latin-1", "replace"))
        + rb"(--)?[ \t]*(?:\r?\n|$)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            return parts
        start = match.end()
    if start is not None:
        parts.append(body[start:])
    return parts


def find(part: Part, path: list[int]) -> Part | None:
    """The part at a section path (1-based); a message/rfc822 part descends into its message."""
    current = part
    for number in path:
        if current.message is not None and not current.children:
            current = current.message
        if current.children:
            if not 1 <= number <= len(current.children):
                return None
            current = current.children[number - 1]
        elif number == 1:
            continue  # a non-multipart message has one part: itself (RFC 3501 §6.4.5)
        else:
            return None
    return current


def section_bytes(raw: bytes, section: str) -> bytes | None:
    """The bytes of BODY[section]; None when the part does not exist (answered as empty)."""
    section = section.strip()
    if not section:
        return raw  # BODY[]: what a syncing client asks for, no parsing needed
    if section.upper() in ("HEADER", "TEXT"):
        header, body = split_header(raw)
        return header if section.upper() == "HEADER" else body
    root = parse(raw)
    spec = section.upper()
    path: list[int] = []
    rest = spec
    while rest and rest[0].isdigit():
        number, _, rest = rest.partition(".")
        if not number.isdigit():
            return None
        path.append(int(number))
    part = find(root, path) if path else root
    if part is None:
        return None
    if not rest:
        return part.body if path else raw
    if path and rest == "MIME":
        return part.header
    target = part.message if path and part.message is not None else part
    if rest == "HEADER":
        return target.header
    if rest == "TEXT":
        return target.body
    if rest.startswith("HEADER.FIELDS"):
        negate = rest.startswith("HEADER.FIELDS.NOT")
        names_text = section[section.find("(") + 1 : section.rfind(")")]
        names = {n.strip('"').lower() for n in names_text.split()}
        return _header_fields(target.header, names, negate)
    return None


def _header_fields(header: bytes, names: set[str], negate: bool) -> bytes:
    out = []
    for field_bytes in _header_lines(header):
        name = field_bytes.split(b":", 1)[0].strip().decode("latin-1").lower()
        if (name in names) != negate:
            out.append(field_bytes)
    return b"".join(out) + b"\r\n"


def _header_lines(header: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


# --- ENVELOPE and BODYSTRUCTURE -------------------------------------------------------------


def _text(value: str | None) -> bytes:
    if value is None:
        return b"NIL"
    return quote(_decoded(value))


def _decoded(value: str) -> str:
    # RFC 3501 returns header text as sent; we keep encoded words as they are, but the
    # standard library hands back str with surrogates for 8-bit bytes: restore them
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _addresses(headers: Message, name: str) -> bytes:
    values = headers.get_all(name)
    if not values:
        return b"NIL"
    out = []
    for display, email in getaddresses([_decoded(str(v)) for v in values]):
        if not email and not display:
            continue
        local, _, domain = email.rpartition("@") if "@" in email else (email, "", "")
        out.append(
            plist(
                [
                    quote(display) if display else b"NIL",
                    b"NIL",
                    quote(local) if local else b"NIL",
                    quote(domain) if domain else b"NIL",
                ]
            )
        )
    return plist(out) if out else b"NIL"


def envelope(headers: Message) -> bytes:
    def one(name: str) -> bytes:
        value = headers.get(name)
        return _text(str(value)) if value is not None else b"NIL"

    sender = _addresses(headers, "from")
    return plist(
        [
            one("date"),
            one("subject"),
            sender,
            _addresses(headers, "sender") if headers.get("sender") else sender,
            _addresses(headers, "reply-to") if headers.get("reply-to") else sender,
            _addresses(headers, "to"),
            _addresses(headers, "cc"),
            _addresses(headers, "bcc"),
            one("in-reply-to"),
            one("message-id"),
        ]
    )


def bodystructure(part: Part, extended: bool = True) -> bytes:
    maintype, subtype = part.content_type
    if part.children:
        items = b"".join(bodystructure(child, extended) for child in part.children)
        fields = [items + b" " + quote(subtype.upper())]
        if extended:
            fields.append(_params(part.params))
            fields.append(_disposition(part))
            fields.append(_language(part))
            fields.append(b"NIL")
        return b"(" + b" ".join(fields) + b")"
    encoding = (part.headers.get("content-transfer-encoding") or "7BIT").strip().upper()
    params = part.params
    if maintype == "text" and not any(k.lower() == "charset" for k, _ in params):
        params = [("charset", "us-ascii"), *params]
    fields = [
        quote(maintype.upper()),
        quote(subtype.upper()),
        _params(params),
        _text(part.headers.get("content-id")),
        _text(part.headers.get("content-description")),
        quote(encoding),
        str(len(part.body)).encode(),
    ]
    if part.message is not None:
        fields.append(envelope(part.message.headers))
        fields.append(bodystructure(part.message, extended))
        fields.append(str(part.body.count(b"\n")).encode())
    elif maintype == "text":
        fields.append(str(part.body.count(b"\n")).encode())
    if extended:
        fields.append(_text(part.headers.get("content-md5")))
        fields.append(_disposition(part))
        fields.append(_language(part))
        fields.append(b"NIL")
    return plist(fields)


def _params(params: list[tuple[str, str]]) -> bytes:
    if not params:
        return b"NIL"
    return plist([b"%s %s" % (quote(k.upper()), quote(_decoded(v))) for k, v in params])


def _disposition(part: Part) -> bytes:
    value = part.headers.get("content-disposition")
    if not value:
        return b"NIL"
    kind = str(value).split(";", 1)[0].strip()
    params = part.headers.get_params(header="content-disposition") or []
    rest = [(k, v) for k, v in params[1:] if isinstance(v, str)]
    return plist([quote(kind.upper()), _params(rest)])


def _language(part: Part) -> bytes:
    value = part.headers.get("content-language")
    return quote(str(value).strip()) if value else b"NIL"


def decoded_header(value: str) -> str:
    """A header value with RFC 2047 words decoded (for SEARCH)."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value
