"""Turn a raw message (full RFC 5322 or just "Subject: ...\\n\\nbody") into visible text.

Only the Subject and the body survive: every other header is a property of the corpus a
message came from (relays, list software, dates), not of the message, and the model is
judged on mail that has no other headers at all. Headers are still *used* to decode
(Content-Type, Content-Transfer-Encoding), and when they are missing the body is sniffed
for the MIME structure, base64 or quoted-printable it would otherwise have declared.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from app.domain.html_fast import FastHTMLParser
from app.domain.mime_fast import parse_bytes
from app.domain.parsing import decoded_payload

# compat32 keeps parsing cheap (no header objects); we decode what we need ourselves.
_PARSER = BytesParser(policy=compat32)

_TAG_SNIFF = re.compile(
    r"<\s*(?:html|body|head|table|font|div|p|br|a\s|img\s|center|td|tr|b|span)\b", re.I
)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BOUNDARY_LINE = re.compile(rb"^--([\w'()+,\-./:=? ]{1,70}?)[ \t]*\r?$", re.M)
_PART_HEADER = re.compile(rb"^content-(?:type|transfer-encoding|disposition)\s*:", re.I | re.M)
_B64_BODY = re.compile(rb"^(?:[A-Za-z0-9+/]{16,76}={0,2}[ \t]*\r?\n)+[A-Za-z0-9+/=]*\s*$")
_QP_ESCAPE = re.compile(rb"=(?:[0-9A-F]{2}|\r?\n)")
# Footers that list software appends (Mailman, Yahoo! Groups, SourceForge): a property of the
# lists a corpus was collected from, and so the first thing a model would wrongly learn as "ham".
_SEPARATOR = re.compile(r"^(?:_{10,}|-{10,}.*|--\s?)$")
_LIST_MARKER = re.compile(
    r"mailing list|listinfo|mailman|yahoo! ?groups|egroups|sf\.net email is sponsored"
    r"|unsubscribe from this group|lists\.sourceforge",
    re.I,
)
_FOOTER_LINES = 40
# RFC 2919 list tags in the Subject: "Re: [ILUG] ...".
_SUBJECT_TAG = re.compile(r"\[[^\]\s]{1,30}\]\s*")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.I)
# _URL's matches, spelled so that the regex engine skips ahead to an "h" or "w" instead of trying
# every position (5 times faster on a long body): under re.I "s" also matches "ſ", and no other
# of these letters has a twin outside ASCII.
_URL_FAST = re.compile(
    r"[HhWw](?:(?<=[Hh])[Tt][Tt][Pp][Ssſ]?://|(?<=[Ww])[Ww][Ww]\.)[^\s<>\"'()\[\]{}]+"
)


@dataclass(frozen=True)
class MessageText:
    """The parts of a message that exist with or without its headers."""

    subject: str
    body: str
    html: bool  # some body text came from HTML
    urls: tuple[str, ...]  # link targets (href/src) and URLs written in the text
    images: int  # <img> tags
    attachments: tuple[str, ...]  # content types of non-text parts


class _HtmlFacts:
    """HTML → visible text, plus the link targets and image count spam relies on: the
    ``html.parser`` callbacks, for ``_HtmlText`` (its own parse) and ``SharedHtml`` (another's)."""

    _SKIP = frozenset({"script", "style", "head", "title"})
    _BREAK = frozenset({"br", "p", "div", "tr", "li", "td", "table", "h1", "h2", "h3", "center"})

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.links: list[str] = []
        self.images = 0
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BREAK:
            self.chunks.append("\n")
        if tag == "img":
            self.images += 1
        for name, value in attrs:
            if value and name in ("href", "src") and tag in ("a", "area", "img", "form"):
                self.links.append(value)
            elif value and name == "action" and tag == "form":
                self.links.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)

    def facts(self) -> tuple[str, list[str], int]:
        return " ".join(self.chunks), self.links, self.images


class _HtmlText(_HtmlFacts, FastHTMLParser):
    def __init__(self) -> None:
        FastHTMLParser.__init__(self, convert_charrefs=True)
        _HtmlFacts.__init__(self)


class SharedHtml(_HtmlFacts):
    """What ``html_to_text`` finds in the HTML documents another parser reads: an
    ``app.domain.html_safety.HtmlListener``. The MX renders an HTML body to text for storage;
    given this listener, the same ``html.parser`` events also give the model's text, links and
    image count, and ``read_message(..., parsed_html=shared.documents)`` uses them instead of
    parsing that HTML a second time.

    Exact by construction: a document is known by its exact text, so the model uses a result
    only for the very string it would have parsed, and the events are the ones its own parser
    would have seen (``html.parser`` with converted character references, the same class; the
    other parser must not stop on an error of its own: then the document is not kept). A parse
    that ``html.parser`` broke off with an error ``html_to_text`` would not catch is not kept
    either (the model's own parse raises it, as before).
    """

    def __init__(self) -> None:
        super().__init__()
        self.documents: dict[str, tuple[str, list[str], int]] = {}

    def done(self, html: str, error: Exception | None, complete: bool) -> None:
        if complete and (error is None or isinstance(error, _HTML_ERRORS)):
            self.documents[html] = self.facts()
        _HtmlFacts.__init__(self)


_HTML_ERRORS = (AssertionError, ValueError)  # malformed markup: keep what was read so far


def html_to_text(html: str) -> tuple[str, list[str], int]:
    """Visible text, link targets and image count of an HTML document (never raises)."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except _HTML_ERRORS:
        pass
    return parser.facts()


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes → str with the declared charset, else UTF-8, else Windows-1252 (never raises)."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # cp1252 is what undeclared 8-bit mail of that era mostly is; replace the 5 holes.
    return data.decode("cp1252", errors="replace")


def decode_subject(value: str | None) -> str:
    """The Subject with RFC 2047 encoded-words decoded (raw value if they are broken)."""
    if not value:
        return ""
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeDecodeError, ValueError, binascii.Error):
        return value


def _sniff_multipart(body: bytes) -> bytes | None:
    """A body whose Content-Type header was removed, re-wrapped if it is still multipart."""
    for match in _BOUNDARY_LINE.finditer(body[:20000]):
        following = body[match.end() : match.end() + 400]
        if _PART_HEADER.search(following):
            boundary = match.group(1).decode("ascii")
            head = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'.encode()
            return head + body
    return None


def _sniff_transfer_encoding(body: bytes) -> bytes:
    """Undo base64 / quoted-printable (RFC 2045 §6.7, §6.8) on an undeclared body."""
    stripped = body.strip()
    if len(stripped) >= 64 and _B64_BODY.match(stripped + b"\n"):
        try:
            decoded = base64.b64decode(stripped, validate=False)
        except (binascii.Error, ValueError):
            decoded = b""
        printable = sum(32 <= c < 127 or c in (9, 10, 13) for c in decoded[:2000])
        if decoded and printable >= 0.9 * min(len(decoded), 2000):
            return decoded
    if len(_QP_ESCAPE.findall(body[:20000])) >= 3:
        return quopri.decodestring(body)
    return body


def strip_list_footer(text: str) -> str:
    """Cut a mailing-list footer (and the signature above it) off the end of a body."""
    lines = text.splitlines()
    start = max(0, len(lines) - _FOOTER_LINES)
    for index in range(start, len(lines)):
        if _SEPARATOR.match(lines[index].strip("> )")) and _LIST_MARKER.search(
            "\n".join(lines[index:])
        ):
            lines = lines[:index]
            break
    while lines and (not lines[-1].strip() or _LIST_MARKER.search(lines[-1])):
        lines.pop()  # a bare footer line with no separator above it (FoRK's listinfo URL)
    return "\n".join(lines)


def _undeclared(msg: Message) -> bool:
    """A message whose body declares no MIME structure: the model sniffs it from the raw body
    (``_sniff_multipart``, ``_sniff_transfer_encoding``)."""
    return msg.get("Content-Type") is None and not msg.is_multipart()


def _part_text(part: Message) -> str:
    payload = decoded_payload(part)  # get_payload(decode=True), base64 by pybase64
    if not isinstance(payload, bytes):
        return ""
    return decode_bytes(payload, part.get_content_charset())


def read_message(
    raw: bytes | str | Message, parsed_html: Mapping[str, tuple[str, list[str], int]] | None = None
) -> MessageText:
    """Decode every text part (charsets, QP, base64), HTML to text; other headers dropped.

    ``parsed_html``: ``html_to_text`` results already known (``SharedHtml.documents``), by
    document.
    """
    if isinstance(raw, Message):
        msg = raw
    else:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        msg = parse_bytes(data, compat32)
        if _undeclared(msg):
            body = msg.get_payload(decode=False)
            body_bytes = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else b""
            rewrapped = _sniff_multipart(body_bytes)
            if rewrapped is not None:
                inner = parse_bytes(rewrapped, compat32)
                inner["Subject"] = msg.get("Subject", "")
                msg = inner
            else:
                msg.set_payload(_sniff_transfer_encoding(body_bytes))
    texts: list[str] = []
    links: list[str] = []
    attachments: list[str] = []
    images = 0
    html = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if part.get_content_maintype() != "text" or part.get_filename():
            attachments.append(ctype)
            continue
        text = _part_text(part)
        if ctype == "text/html" or _TAG_SNIFF.search(text, 0, 5000):
            html = True
            known = parsed_html.get(text) if parsed_html else None
            text, found, count = known if known is not None else html_to_text(text)
            links.extend(found)
            images += count
        texts.append(strip_list_footer(text))
    body = "\n".join(texts)
    links.extend(_URL_FAST.findall(body))
    return MessageText(
        subject=_SUBJECT_TAG.sub("", decode_subject(msg.get("Subject"))),
        body=body,
        html=html,
        urls=tuple(links),
        images=images,
        attachments=tuple(attachments),
    )


def read_tree(
    tree: Message, raw: bytes, parsed_html: Mapping[str, tuple[str, list[str], int]] | None = None
) -> MessageText:
    """``read_message(raw, parsed_html)``, read from ``tree``: the MIME tree another parser
    built from the same ``raw`` (the MX's storage parse, ``app.domain.parsing.parse_tree``),
    so the model does not parse the message a second time.

    The same reading: that parser runs the same ``FeedParser`` with ``email.policy.default``,
    whose headers are stored as the same raw strings compat32 stores (both policies'
    ``header_source_parse`` are one code). Only fetching a header differs (a header object,
    not the raw string), so each part reads with compat32 while the model walks the tree, and
    gets its policy back afterwards. A message with no Content-Type that is not multipart is
    read from ``raw``: the model sniffs such bodies (``_sniff_multipart``), which changes
    the tree. ``tests/unit/test_shared_html.py`` holds the two readings equal.
    """
    if _undeclared(tree):
        return read_message(raw, parsed_html)
    parts = list(tree.walk())
    policies = [part.policy for part in parts]
    for part in parts:
        part.policy = compat32
    try:
        return read_message(tree, parsed_html)
    finally:
        for part, policy in zip(parts, policies, strict=True):
            part.policy = policy


def subject_and_body(raw: bytes) -> bytes:
    """Only the Subject line and the undecoded body: how mail is judged outside the corpus."""
    msg = _PARSER.parsebytes(raw, headersonly=True)
    end = _HEADER_END.search(raw)
    body = raw[end.end() :] if end else b""
    subject = decode_subject(msg.get("Subject")).replace("\n", " ").replace("\r", "")
    return b"Subject: " + subject.encode("utf-8") + b"\n\n" + body
