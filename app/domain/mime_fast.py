"""The standard library's MIME parser without two costs that grow with a part's length.

``parse_bytes(data, policy)`` is ``BytesParser(policy=policy).parsebytes(data)``: the same
``FeedParser``, fed the same 8,192-character pieces, running the same ``_parsegen`` code. On the
inbound benchmark's ~1 MB messages (a base64 attachment of ~13,500 lines) stock spends most of
its parse in two places, and both are changed here without changing a result:

1. **Each line of a part's body is a trip through ``BufferedSubFile.__next__`` and
   ``readline``**, which asks every end-of-part predicate on the stack (the enclosing
   multiparts' ``boundaryre.match``) whether the line ends the part. Here the line source's
   ``__iter__`` is a generator doing what repeated ``__next__`` calls do (the next line,
   ``NeedMoreData`` when the buffer is empty and open, the end at a predicate's match, at the
   closed buffer's end or at an empty line ``_parsegen`` pushed back), and it asks the
   predicates only about a line that could match one of them: a boundary line starts with
   ``--`` (``boundaryre`` is anchored and begins with the escaped ``--`` + boundary;
   ``_parsegen`` builds it so) and ``NLCRE.match`` needs a line that starts with ``\\r`` or
   ``\\n``. A predicate of any other kind is always asked.
   ``readline`` itself (the multipart loop's boundary scan, ``unreadline``) is stock's.
2. **``NLCRE_eol.search(payload)``** (``(\\r\\n|\\r|\\n)\\Z``: the line break that ends a part
   belongs to the boundary, RFC 2046) tries the pattern at every position of the payload. A
   match is one or two characters long and ends at the end, so it starts at ``len - 2`` or
   later: searching from there finds the same match (the same ``re.Match`` values). Stock's
   ``_parsegen`` code object runs here with module globals in which only ``NLCRE_eol`` is this
   bounded search; the recursion goes through ``self._parsegen``, so nested parts take it too.

On the inbound mix's ~1 MB messages the MIME parse went from 17.4–18.7 to 4.9–5.1 ms, and the
MX's whole analysis of a message of the mix (parse, HTML, spam score) from 5.43 to 4.37 ms on
average (docs/overrides.md).

Mirrors CPython 3.11.7's ``Lib/email/feedparser.py`` and ``Lib/email/parser.py``:
``REVIEWED`` fingerprints what the two changes rely on; a Python whose parser differs turns
them off (``ACTIVE``) and ``parse_bytes`` is stock's ``BytesParser`` again.
``tests/unit/test_mime_fast.py`` compares whole parse trees (headers, payloads, preambles,
epilogues, defects, classes) with stock's.
"""

from __future__ import annotations

import email.feedparser
import email.parser
import re
import types
from collections.abc import Callable, Iterator
from email.feedparser import BufferedSubFile, FeedParser  # type: ignore[attr-defined]
from email.message import Message
from email.parser import BytesParser
from typing import Any

from app.domain.html_fast import fingerprint as fingerprint  # re-exported: what REVIEWED holds
from app.domain.html_fast import installed_fingerprint

# sha256 (first 16 hex digits) of each function's source and each pattern's text and flags,
# as reviewed (CPython 3.11.7; Debian 12's 3.11.2 has the same).
REVIEWED = {
    "BufferedSubFile.__init__": "54e535bf05f3ba75",
    "BufferedSubFile.close": "82acfb53bd3fd606",
    "BufferedSubFile.__iter__": "b411eeeaeb7c31dc",
    "BufferedSubFile.__next__": "104dbb73e47f16aa",
    "BufferedSubFile.readline": "60fd12dda02ac9b0",
    "BufferedSubFile.push_eof_matcher": "564c5e6b918478b1",
    "BufferedSubFile.pop_eof_matcher": "7a8adac5e9605f3a",
    "FeedParser.__init__": "a42f55ca977d8fb9",
    "FeedParser._parsegen": "935a38b99cd504ee",
    "Parser.parse": "ec0d1a40582e5123",
    "Parser.parsestr": "0613854643c39c43",
    "BytesParser.parsebytes": "02bb6d818faa46c7",
    "NLCRE": "e2d76596e583566f",
    "NLCRE_eol": "4f3024aaf5d24a39",
}

_feedparser: Any = email.feedparser  # typeshed leaves out what the parser uses inside
NeedMoreData = _feedparser.NeedMoreData
_CHUNK = 8192  # what stock's Parser.parse reads at a time
_BOUNDARY_START = "(?P<sep>" + re.escape("--")


def stock_fingerprints() -> dict[str, str]:
    """The fingerprints of what this Python's ``email`` parser has under ``REVIEWED``'s names."""
    owners = {
        "BufferedSubFile": BufferedSubFile,
        "FeedParser": email.feedparser.FeedParser,
        "Parser": email.parser.Parser,
        "BytesParser": email.parser.BytesParser,
    }
    found = {}
    for name in REVIEWED:
        owner, _, attribute = name.rpartition(".")
        obj = getattr(owners[owner], attribute, None) if owner else vars(_feedparser).get(name)
        found[name] = installed_fingerprint(obj)
    return found


# Whether the fast parse runs: only on the parser it was written against.
ACTIVE = stock_fingerprints() == REVIEWED


def _first_characters(predicate: Callable[[str], Any]) -> str | None:
    """The characters a line the predicate can match may start with; None: any."""
    pattern = getattr(predicate, "__self__", None)
    if not isinstance(pattern, re.Pattern) or getattr(predicate, "__name__", "") != "match":
        return None
    if pattern is _feedparser.NLCRE:
        return "\r\n"
    if pattern.pattern.startswith(_BOUNDARY_START) and not pattern.flags & re.IGNORECASE:
        return "-"
    return None


class _Lines(BufferedSubFile):
    """Stock's line buffer; iterating it asks the end-of-part predicates only when they could
    match (see the module's docstring, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._firsts: str | None = ""  # "": no predicates; None: ask them about every line

    def push_eof_matcher(self, pred: Callable[[str], Any]) -> None:
        super().push_eof_matcher(pred)
        self._firsts = self._firsts_of_stack()

    def pop_eof_matcher(self) -> Callable[[str], Any]:
        pred = super().pop_eof_matcher()
        self._firsts = self._firsts_of_stack()
        return pred  # type: ignore[no-any-return]

    def _firsts_of_stack(self) -> str | None:
        firsts = ""
        for pred in self._eofstack:  # type: ignore[attr-defined]
            more = _first_characters(pred)
            if more is None:
                return None
            firsts += more
        return firsts

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        lines = self._lines  # type: ignore[attr-defined]
        while True:
            if not lines:
                if self._closed:  # type: ignore[attr-defined]
                    return
                yield NeedMoreData
                continue
            line = lines.popleft()
            firsts = self._firsts
            if firsts is None or line[:1] in firsts:  # "" (an unread end) is in every string
                for ateof in reversed(self._eofstack):  # type: ignore[attr-defined]
                    if ateof(line):
                        lines.appendleft(line)
                        return
            if not line:  # _parsegen unread the end of the input: stock's __next__ stops
                return
            yield line


class _EndOfLine:
    """``NLCRE_eol`` searching only where a match can start (see the module's docstring, 2)."""

    _pattern = _feedparser.NLCRE_eol

    def search(self, text: str) -> re.Match[str] | None:
        return self._pattern.search(text, max(0, len(text) - 2))


def _stock_parsegen_with_bounded_eol_search() -> Any:
    stock = FeedParser._parsegen  # type: ignore[attr-defined]
    namespace = dict(vars(_feedparser))
    namespace["NLCRE_eol"] = _EndOfLine()
    return types.FunctionType(
        stock.__code__, namespace, stock.__name__, stock.__defaults__, stock.__closure__
    )


class _FastFeedParser(FeedParser):
    _parsegen = _stock_parsegen_with_bounded_eol_search()

    def __init__(self, policy: Any) -> None:
        super().__init__(policy=policy)
        self._input = _Lines()  # _parsegen has not started: it reads self._input when it does


def parse_bytes(data: bytes, policy: Any, *, headersonly: bool = False) -> Message:
    """``BytesParser(policy=policy).parsebytes(data, headersonly)``, faster on long parts."""
    if not ACTIVE:
        return BytesParser(policy=policy).parsebytes(data, headersonly)
    text = data.decode("ASCII", errors="surrogateescape")
    parser = _FastFeedParser(policy)
    if headersonly:
        parser._set_headersonly()  # type: ignore[attr-defined]
    for start in range(0, len(text), _CHUNK):
        parser.feed(text[start : start + _CHUNK])
    return parser.close()
