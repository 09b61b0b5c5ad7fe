"""``html.parser.HTMLParser`` with a fast path for plain start and end tags (same events).

Both HTML readers (``html_safety._TextRenderer``, storage's text rendering, and
``ml.message_text._HtmlText``, the spam model's) subclass ``FastHTMLParser``; ``ml.SharedHtml``
relies on the two seeing exactly the events stock ``HTMLParser(convert_charrefs=True)`` gives.
Stock spends, per tag, a pass of ``goahead``'s dispatch, ``parse_starttag`` with three regular
expressions, a call to ``check_for_whole_start_tag`` and a loop per attribute, and an
``updatepos`` call per event. Here ``goahead``'s loop reads a tag of the common plain form with
one strict regular expression and hands everything else, one construct at a time, to stock's own
methods; at the end of the buffer (or with ``convert_charrefs=False``) it hands the rest over to
stock's ``goahead``. On the inbound benchmark's ~50 KB newsletters storage's ``html_to_text``
went from 3.23 to 2.31 ms and the model's from 1.68 to 0.87 ms (docs/overrides.md).

Mirrors CPython 3.11.7's ``Lib/html/parser.py``: ``HTMLParser.goahead``, ``parse_starttag``,
``check_for_whole_start_tag``, ``parse_endtag``, ``set_cdata_mode``, ``clear_cdata_mode`` and the
``locatestarttagend_tolerant``, ``tagfind_tolerant``, ``attrfind_tolerant``, ``endtagfind`` and
``starttagopen`` regular expressions. ``tests/unit/test_library_internals.py`` fingerprints
them; ``tests/unit/test_html_fast.py`` compares event streams with stock's.

Why a plain start tag gives stock's result, piece by piece:

- the name ``[a-zA-Z][a-zA-Z0-9]*`` is followed by one of `` \\t\\n\\r\\f``, ``>`` or ``/>``, so
  stock's ``[a-zA-Z][^\\t\\n\\r\\f />\\x00]*`` stops at the same place;
- each attribute is preceded by whitespace (stock's look-behind) and named
  ``[a-zA-Z_:][-a-zA-Z0-9_:.]*`` followed by ``=``, whitespace, ``>`` or ``/`` (where stock's
  ``[^\\s/=>]*`` stops); its value is absent (``None``), ``"..."`` / ``'...'`` without ``&``,
  ``<`` or ``>`` (so ``unescape`` leaves it as it is), or unquoted ASCII without ``&``, quotes or
  ``=``, followed by whitespace or ``>`` (where stock's bare ``[^>\\s]*`` stops: a ``/`` before
  ``>`` belongs to the value, as in stock). One ``=``, no spaces around it;
- then optional whitespace and ``>`` (``handle_starttag``, then CDATA mode for script/style) or
  ``/>`` (``handle_startendtag``): stock's trailing ``end`` is ``>`` / ``/>`` alike, and
  ``check_for_whole_start_tag`` ends the tag at that ``>``.

A ``</name>`` end tag outside CDATA mode is ``handle_endtag(name.lower())``, as in stock (whose
``clear_cdata_mode`` then changes nothing: outside CDATA mode ``cdata_elem`` is None and
``interesting`` the normal pattern already); inside CDATA mode stock's ``parse_endtag`` decides.

Differences nobody here can see: ``updatepos`` does no line bookkeeping (``getpos()`` stays at
(1, 0); both readers skipped it already), subclasses' ``parse_starttag`` / ``parse_endtag`` are
not called for plain tags, and after an exception from a handler ``rawdata`` may hold only the
unread rest instead of the whole buffer (both readers stop at an exception).
"""

from __future__ import annotations

import hashlib
import html
import html.parser
import inspect
import re
from html import unescape
from html.parser import HTMLParser, starttagopen  # type: ignore[attr-defined]
from typing import Any

# What the fast path mirrors, as reviewed: sha256 (first 16 hex digits) of each function's
# source and of each pattern's text and flags. CPython 3.11.2 (Debian 12) and 3.11.7 have the
# same. The standard library is not pinned like a package: a Python whose html.parser differs
# (a later security release) turns the fast path off, and every event is stock's again, until
# someone re-reads the new code and records it here (docs/overrides.md).
REVIEWED = {
    "HTMLParser.check_for_whole_start_tag": "47aa87ac4b7ea393",
    "HTMLParser.clear_cdata_mode": "7b1427f0aa5de1b0",
    "HTMLParser.goahead": "482555522333534e",
    "HTMLParser.parse_endtag": "b035acffd6ed02f6",
    "HTMLParser.parse_starttag": "243e1b824078db92",
    "HTMLParser.set_cdata_mode": "9df0fd31e1a76bdb",
    "attrfind_tolerant": "040d8ffa304efffd",
    "endendtag": "75564cef7721bd02",
    "endtagfind": "1a685be2ca34779d",
    "interesting_normal": "ea581c7f5394d908",
    "locatestarttagend_tolerant": "983f762e4100bdfa",
    "starttagopen": "457d774c48203bca",
    "tagfind_tolerant": "54259ef245ffc3a6",
    "unescape": "f24f060ae8765b69",
}


def fingerprint(obj: Any) -> str:
    """A regular expression by its pattern and flags, anything else by its source."""
    text = f"{obj.pattern!r} {obj.flags}" if isinstance(obj, re.Pattern) else inspect.getsource(obj)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_fingerprint(obj: Any) -> str:
    """``fingerprint`` of what this Python has (None: "missing"; no source: "no source")."""
    if obj is None:
        return "missing"
    try:
        return fingerprint(obj)
    except (OSError, TypeError):  # no source to read (a stripped install)
        return "no source"


def stock_fingerprints() -> dict[str, str]:
    """The fingerprints of what this Python's ``html.parser`` has under ``REVIEWED``'s names."""
    found = {}
    for name in REVIEWED:
        if name == "unescape":
            obj: Any = html.unescape
        elif name.startswith("HTMLParser."):
            obj = getattr(html.parser.HTMLParser, name.removeprefix("HTMLParser."), None)
        else:
            obj = getattr(html.parser, name, None)
        found[name] = installed_fingerprint(obj)
    return found


# Whether the fast path runs: only on the html.parser it was written against.
ACTIVE = stock_fingerprints() == REVIEWED

_START_TAG = re.compile(
    r"<([a-zA-Z][a-zA-Z0-9]*)"
    r"((?:[ \t\n\r\f]+[a-zA-Z_:][-a-zA-Z0-9_:.]*"
    r"""(?:="[^"&<>]*"|='[^'&<>]*'|=[-a-zA-Z0-9_.:/#%?+,;@!~*()$|]+(?=[ \t\n\r\f>]))?"""
    r"(?=[ \t\n\r\f>=/]))*)"
    r"[ \t\n\r\f]*(/?)>"
)
# The attributes of a tag _START_TAG matched: (name, "=" or "", "-quoted, '-quoted, unquoted).
_ATTRIBUTE = re.compile(
    r"([a-zA-Z_:][-a-zA-Z0-9_:.]*)"
    r"""(?:(=)(?:"([^"]*)"|'([^']*)'|([^ \t\n\r\f>]+)))?"""
)
_END_TAG = re.compile(r"</([a-zA-Z][a-zA-Z0-9]*)>")


class FastHTMLParser(HTMLParser):
    """``HTMLParser`` reading plain start and end tags with one regular expression each."""

    def goahead(self, end: bool) -> None:
        if not ACTIVE or not self.convert_charrefs:
            super().goahead(end)
            return
        rawdata = self.rawdata
        find = rawdata.find
        startswith = rawdata.startswith
        start_tag = _START_TAG.match
        end_tag = _END_TAG.match
        attributes_of = _ATTRIBUTE.findall
        handle_data = self.handle_data
        cdata_elements = self.CDATA_CONTENT_ELEMENTS
        i = 0
        n = len(rawdata)
        while i < n:
            # the text up to the next construct, as stock's goahead finds it
            if self.cdata_elem:
                match = self.interesting.search(rawdata, i)
                if match is None:
                    break
                j = match.start()
                if i < j:
                    handle_data(rawdata[i:j])
            else:
                j = find("<", i)
                if j < 0:
                    break  # stock decides whether the tail waits for more input
                if i < j:
                    data = rawdata[i:j]
                    handle_data(unescape(data) if "&" in data else data)
            i = j
            m = start_tag(rawdata, i)
            if m is not None:  # stock's parse_starttag, for a plain tag
                k = m.end()
                self._HTMLParser__starttag_text = rawdata[i:k]
                self.lasttag = tag = m.group(1).lower()
                attributes = m.group(2)
                attrs: list[tuple[str, str | None]] = (
                    [
                        (name.lower(), (dq or sq or bare) if eq else None)
                        for name, eq, dq, sq, bare in attributes_of(attributes)
                    ]
                    if attributes
                    else []
                )
                if m.group(3):
                    self.handle_startendtag(tag, attrs)
                else:
                    self.handle_starttag(tag, attrs)
                    if tag in cdata_elements:
                        self.set_cdata_mode(tag)
                i = k
                continue
            if not self.cdata_elem:
                m = end_tag(rawdata, i)
                if m is not None:  # stock's parse_endtag, for a plain end tag
                    self.handle_endtag(m.group(1).lower())
                    i = m.end()
                    continue
            # anything else: stock's goahead's dispatch, stock's methods
            if starttagopen.match(rawdata, i):
                k = self.parse_starttag(i)
            elif startswith("</", i):
                k = self.parse_endtag(i)
            elif startswith("<!--", i):
                k = self.parse_comment(i)
            elif startswith("<?", i):
                k = self.parse_pi(i)
            elif startswith("<!", i):
                k = self.parse_html_declaration(i)
            elif i + 1 < n:
                handle_data("<")
                k = i + 1
            else:
                break
            if k < 0:
                break  # unfinished: stock reads it again (no handler ran) and decides
            i = k
        # The unread rest (usually a few characters, or nothing) goes through stock's goahead,
        # which starts from the same state stock would be in at this point.
        self.rawdata = rawdata[i:]
        super().goahead(end)

    def updatepos(self, i: int, j: int) -> int:
        """No line/column bookkeeping: it only feeds ``getpos()``, never asked here."""
        return j
