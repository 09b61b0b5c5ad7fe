"""``FastHTMLParser`` gives exactly stock ``html.parser.HTMLParser``'s events (docs/overrides.md).

Both HTML readers (storage's ``html_to_text`` and the spam model's) parse with it, and
``ml.SharedHtml`` shares one parse between them on the promise that both see what stock
``HTMLParser(convert_charrefs=True)`` emits. Every event (with its attributes, the start tag's
source text, ``lasttag``, CDATA mode) and the unread rest after each ``feed`` must be stock's:
on the test messages' HTML, benchmark-like newsletters and thousands of random documents made
of awkward pieces, fed whole and in random chunks; and both readers' outputs must be what they
were with stock's parser.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from app.domain import html_fast, html_safety
from app.domain.html_fast import FastHTMLParser
from app.domain.parsing import parse_message
from ml import message_text

DATA = Path(__file__).resolve().parents[1] / "data"

Event = tuple[Any, ...]


class _Recorder(HTMLParser):
    """Every html.parser callback, with the parser state stock sets around it."""

    events: list[Event]

    def _add(self, *event: Any) -> None:
        self.events.append((*event, self.cdata_elem, self.lasttag))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add("start", tag, attrs, self.get_starttag_text())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add("startend", tag, attrs, self.get_starttag_text())

    def handle_endtag(self, tag: str) -> None:
        self._add("end", tag)

    def handle_data(self, data: str) -> None:
        self._add("data", data)

    def handle_comment(self, data: str) -> None:
        self._add("comment", data)

    def handle_decl(self, decl: str) -> None:
        self._add("decl", decl)

    def handle_pi(self, data: str) -> None:
        self._add("pi", data)

    def unknown_decl(self, data: str) -> None:
        self._add("unknown_decl", data)

    def handle_charref(self, name: str) -> None:
        self._add("charref", name)

    def handle_entityref(self, name: str) -> None:
        self._add("entityref", name)


class _Stock(_Recorder, HTMLParser):
    def __init__(self) -> None:
        self.events = []
        HTMLParser.__init__(self, convert_charrefs=True)


class _Fast(_Recorder, FastHTMLParser):
    def __init__(self) -> None:
        self.events = []
        FastHTMLParser.__init__(self, convert_charrefs=True)


def _events(parser: _Stock | _Fast, chunks: list[str]) -> list[Event]:
    out: list[Event] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            out += parser.events + [("fed", parser.rawdata)]
            parser.events = []
        parser.close()
        out += parser.events + [("closed", parser.rawdata, parser.cdata_elem, parser.lasttag)]
    except Exception as exc:  # stock's malformed-markup errors must come at the same place
        out += parser.events + [("raised", type(exc).__name__, str(exc))]
    return out


def _assert_same_events(html: str, rng: random.Random) -> None:
    assert _events(_Fast(), [html]) == _events(_Stock(), [html]), html[:300]
    cuts = sorted(rng.sample(range(1, len(html)), min(len(html) - 1, rng.randint(1, 6))))
    chunks = [html[a:b] for a, b in zip([0, *cuts], [*cuts, len(html)], strict=True)]
    assert _events(_Fast(), chunks) == _events(_Stock(), chunks), (chunks, html[:300])


# --- documents --------------------------------------------------------------------------------


def _html_parts(message: Message) -> Iterator[str]:
    for part in message.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            text = message_text.decode_bytes(payload, part.get_content_charset())
            if part.get_content_subtype() == "html" or "<" in text:
                yield text


def _eml_html() -> list[str]:
    out = []
    for path in sorted(DATA.rglob("*.eml")):
        out += _html_parts(message_from_bytes(path.read_bytes()))
    return out


_WORDS = [
    "lorem",
    "Ipsum",
    "dolor",
    "sit",
    "amet",
    "$5",
    "50%",
    "a&b",
    "x<y",
    "caf\u00e9",
    "\u00a0",
]


def _newsletter(rng: random.Random, size: int, vocabulary: list[str] = _WORDS) -> str:
    """Like the inbound benchmark's HTML mail (shared/peers/msggen.py ``_html_lines``)."""
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Newsletter</title>',
        "<style>p{font-family:sans-serif;color:#333}td{padding:4px}</style></head><body>",
    ]
    while sum(map(len, lines)) < size:
        kind = rng.random()
        words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(20, 90)))
        if kind < 0.6:
            lines += ["<p>", words[:70], words[70:], "</p>"]
        elif kind < 0.85:
            cells = [
                f'<td><a href="https://example.invalid/{rng.randint(1, 10**6)}">{words[:20]}</a></td>'
                for _ in range(4)
            ]
            lines += ["<table><tr>", *cells, "</tr></table>"]
        else:
            lines.append(f"<h2>{words[:40]}</h2>")
            lines.append(
                f'<img src="https://cdn.example.invalid/i/{rng.getrandbits(32):08x}.png" '
                f'alt="{words[:15]}">'
            )
    lines.append("</body></html>")
    return "\r\n".join(lines) + "\r\n"


# Pieces stock treats in every way it can: plain and odd tags, attribute forms, text with
# references, script/style bodies, comments, declarations, stray '<' and '&', unclosed things.
_PIECES = [
    "<p>", "</p>", "<P>", "</P >", "<br>", "<br/>", "<br />", "<BR/>", "<hr/ >", "<p/x>",
    "<a href=\"https://x.example/a?b=1\">", "<a HREF='https://x.example/'>", "</a>", "</A>",
    "<a href=https://x.example/p/>", "<a href=x/ >", "<a href=>", "<a href=\"\">", "<a href=''>",
    "<img src=\"i.png\" alt=\"a b\">", "<img src=i.png alt=x/>", "<img\nsrc=\"x\"\n/>",
    "<td nowrap>", "<td nowrap/>", "<td nowrap >", "<input disabled checked>", "<x a b=c d>",
    "<a href = \"x\">", "<a href= x>", "<a href =x>", "<a href==x>", "<a b=\"x\"c=\"y\">",
    "<a title=\"a>b\">", "<a title='a\"b'>", "<a title=\"a'b\">", "<a title=\"&amp;&lt;\">",
    "<a href=\"?a=1&b=2\">", "<a href=?a=1&amp;b=2>", "<a t=\"x<y\">", "<a t='x&#65;'>",
    "<a href=\"x\" href=\"y\">", "<A HREF=\"X\" Class=Y>", "<a\thref=\"x\"\t>", "<a\fhref=x>",
    "<a\vhref=x>", "<a\x00b>", "<a\u00a0href=x>", "<a h\u00e9=\"x\">", "<t\u00e9g>", "<a-b c>",
    "<h1>", "</h1>", "<h2 class=\"t\">", "<my:tag x:y=\"1\">", "</my:tag>", "<a/>", "<a/ >",
    "<a href=\"x\"/>", "<a href='x'/>", "<a href=x/>", "<a b/c>", "<a b/>", "<a b / >",
    "<a b='x' / >", "<a '>", "<a \"x\">", "<a =x>", "<a b=`x`>", "<a b=x`>", "<a b=x'y>",
    "<script>", "</script>", "<SCRIPT type=\"text/javascript\">", "</SCRIPT >", "</script\n>",
    "<script>var a = '<p>' + '</p>'; if (a < b && c > d) {}</script>", "<script/>",
    "<style>p{color:red}</style>", "<style>a</p>b</sty>c</style>", "<style x=y/>", "</style>",
    "<!-- c -->", "<!---->", "<!-- a -- b -->", "<!--", "-->", "<!-->", "<!--x--!>",
    "<!DOCTYPE html>", "<!doctype html public>", "<!DOCTYPE", "<![CDATA[x<y]]>", "<![if !IE]>",
    "<![endif]>", "<!x>", "<?xml version=\"1.0\"?>", "<?pi", "</>", "</ >", "</ p>", "</1>",
    "</p x=\">\">", "</p\n>", "< p>", "<1>", "<", "<<p>", "a < b", "a<b", "x <= y", "<>",
    "&amp;", "&AMP;", "&lt;", "&#65;", "&#x41;", "&#0;", "&#99999999;", "&unknown;", "&",
    "& ", "&am", "&#", "&#x", "a&b", "AT&T", "&nbsp;", "&copy", "\r\n", "\n", "\r", " ", "\t",
    "text", "Text with words", "caf\u00e9", "\u00a0", "1 < 2 > 0", "x=\"y\"", "'", "\"", "=",
    "/", "/>", ">", "<a href=\"", "<img src='", "<p class=", "<p cl", "<p ", "</p", "</",
    "<table><tr><td><a href=\"https://e.example/1\">one</a></td></tr></table>",
    "<pre>a\r\nb</pre>", "<blockquote>q</blockquote>", "<textarea><p></textarea>",
    "<title>t</title>", "<noscript><p>x</noscript>", "<svg><path d=\"M0\"/></svg>",
]  # fmt: skip


def _fuzzed(rng: random.Random) -> str:
    pieces = [rng.choice(_PIECES) for _ in range(rng.randint(1, 30))]
    if rng.random() < 0.3:
        pieces = [p.upper() if rng.random() < 0.3 else p for p in pieces]
    return "".join(pieces)


def _all_documents() -> list[str]:
    rng = random.Random(17)
    docs = _eml_html()
    docs += [_newsletter(rng, rng.randint(2_000, 30_000)) for _ in range(12)]
    docs += [_fuzzed(rng) for _ in range(3_000)]
    return docs


# --- the tests ----------------------------------------------------------------------------


def test_the_eml_files_have_html_to_compare() -> None:
    assert len(_eml_html()) >= 8


def test_the_same_events_as_stock_html_parser() -> None:
    rng = random.Random(4242)
    for html in _all_documents():
        if html:
            _assert_same_events(html, rng)


def test_every_piece_alone_and_between_text() -> None:
    rng = random.Random(7)
    for piece in _PIECES:
        for html in (piece, f"a{piece}b", f"<p>{piece}</p>", f"<style>{piece}</style>x{piece}"):
            _assert_same_events(html, rng)


# On a Python whose html.parser differs from the reviewed one the fast path is off (and only
# the stock case can run): html_fast.REVIEWED, docs/overrides.md.
@pytest.mark.parametrize("active", [True, False] if html_fast.ACTIVE else [False])
def test_the_fast_path_is_taken_for_the_benchmark_shapes(
    active: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain forms are read by FastHTMLParser itself (stock's parse_starttag not called),
    on the html.parser it was written against; with ``ACTIVE`` False stock reads every tag."""
    monkeypatch.setattr(html_fast, "ACTIVE", active)

    class Counting(_Fast):
        stock_calls = 0

        def parse_starttag(self, i: int) -> int:
            Counting.stock_calls += 1
            return super().parse_starttag(i)  # type: ignore[no-any-return]

        def parse_endtag(self, i: int) -> int:
            Counting.stock_calls += 1
            return super().parse_endtag(i)  # type: ignore[no-any-return]

    parser = Counting()
    plain_words = [word for word in _WORDS if not set(word) & set("&<")]  # msggen's words
    parser.feed(_newsletter(random.Random(1), 20_000, plain_words))
    parser.close()
    starts = sum(event[0] == "start" for event in parser.events)
    assert starts > 100
    if active:
        assert Counting.stock_calls == 1  # </style>, in CDATA mode: stock's parse_endtag
    else:
        assert Counting.stock_calls > starts  # every start tag and every end tag


def _outputs() -> list[Any]:
    out: list[Any] = []
    for html in _all_documents():
        out.append(html_safety.html_to_text(html))
        out.append(message_text.html_to_text(html))
        shared = message_text.SharedHtml()
        html_safety.html_to_text(html, shared)
        out.append(shared.documents)
    for path in sorted(DATA.rglob("*.eml")):
        raw = path.read_bytes()
        out.append(message_text.read_message(raw))
        out.append(parse_message(raw))
    return out


def test_both_readers_give_what_they_gave_with_stock_html_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = _outputs()
    monkeypatch.setattr(FastHTMLParser, "goahead", HTMLParser.goahead)
    assert html_safety._TextRenderer.goahead is HTMLParser.goahead
    stock = _outputs()
    assert fast == stock
