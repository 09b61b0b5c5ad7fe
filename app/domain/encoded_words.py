"""RFC 2047 encoded words and charsets: header text in and out of 7-bit mail.

Writing: ``encode_header_words`` for display names and subjects (mime.py, addresses.py).
Reading: ``decode_header_words`` and ``decode_charset`` are tolerant — inbound mail mislabels
charsets and mangles encoded words, so neither raises (parsing.py, addresses.py).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re


def encode_header_words(text: str) -> str:
    """RFC 2047 §4.1 "B" encoded words, each ≤ 75 characters, split on character boundaries."""
    words: list[bytes] = []
    chunk = b""
    for ch in text:
        encoded = ch.encode("utf-8")
        # 45 raw octets → 60 base64 chars + 12 of "=?utf-8?b??=" framing = 72 ≤ 75
        if len(chunk) + len(encoded) > 45:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")

# Labels mail software sends, mapped to the superset codec that real senders actually use
# (WHATWG Encoding Standard): e.g. "iso-8859-1" mail is written by Windows in windows-1252.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}
_ASCII_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "646", "us", "7bit", "8bit"}
# Python codecs that are not mail charsets: they interpret escapes or never decode.
_NOT_MAIL_CHARSETS = {
    "unicode_escape",
    "raw_unicode_escape",
    "punycode",
    "idna",
    "undefined",
    "mbcs",
}


def decode_charset(data: bytes, charset: str | None) -> str:
    """Decode text in a declared charset, never raising.

    Undeclared or ASCII-labelled text that is not ASCII, and text in an unknown or bogus
    charset, is tried as UTF-8 and then read as windows-1252 (latin-1's superset) with
    replacement characters. Text that does not decode in its declared charset is tried as UTF-8
    (the usual mislabel), and bad "UTF-8" as windows-1252, before replacement characters.
    """
    codec = _lookup_codec(charset)
    if codec is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec == "utf-8":  # "UTF-8" that is not: nearly always legacy windows-1252 text
        return data.decode("cp1252", errors="replace")
    try:
        return data.decode(codec, errors="replace")
    except Exception:  # some codecs raise odd errors on hostile bytes
        return data.decode("cp1252", errors="replace")


def _lookup_codec(charset: str | None) -> str | None:
    """A usable Python codec name for a charset label, or None for unknown/ASCII labels."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").strip().lower()
    if not label or label in _ASCII_LABELS:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if info.name.replace("-", "_") in _NOT_MAIL_CHARSETS or not getattr(
        info, "_is_text_encoding", True
    ):
        return None
    return info.name


def decode_header_words(text: str) -> str:
    """Decode RFC 2047 encoded words in a header value; plain text passes through unchanged.

    Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2), and adjacent words in
    one charset are decoded together because senders split multi-byte characters across words.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(decode_charset(b"".join(pending), pending_charset))
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        charset, kind, payload = match.group(1), match.group(2).lower(), match.group(3)
        decoded = _decode_word_payload(kind, payload, charset)
        if decoded is None:  # not decodable: keep the word verbatim
            flush()
            out.append(between + match.group(0))
            pos = match.end()
            continue
        data, charset = decoded
        adjacent = bool(pending) and not between.strip()
        if not adjacent:
            flush()
            out.append(between)
        elif charset.lower() != (pending_charset or "").lower():
            flush()
        pending.append(data)
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _decode_word_payload(kind: str, payload: str, charset: str) -> tuple[bytes, str] | None:
    """The bytes of an encoded word and the charset they are in (``None``: not decodable).

    A Q word may carry raw 8-bit characters (malformed, RFC 2047 §5, but common): they arrive
    here already read as text and go back to bytes in the word's declared charset, or as UTF-8
    when that charset cannot hold them.
    """
    try:
        if kind == "b":
            padded = payload + "=" * (-len(payload) % 4)
            return base64.b64decode(padded.encode("ascii"), validate=False), charset
        # RFC 2047 §4.2: "_" is always a space in the Q encoding.
        text = payload.replace("_", " ")
        if not text.isascii():
            try:
                encoded, charset = text.encode(_lookup_codec(charset) or "utf-8"), charset
            except (UnicodeEncodeError, LookupError):
                encoded, charset = text.encode("utf-8"), "utf-8"
        else:
            encoded = text.encode("ascii")
        return quopri.decodestring(encoded, header=False), charset
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
