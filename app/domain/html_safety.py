"""HTML email bodies: sanitizing for display, plain-text rendering, and list snippets.

``sanitize_html`` uses nh3 (the Rust ``ammonia`` sanitizer) with an email-oriented allow list:

- script/style/head/title/iframe/object/embed/svg/math/template are removed with their content;
  form, input, button, meta, link, base and every other unlisted element are removed (text kept).
- no ``on*`` handlers; URLs only ``http``, ``https``, ``mailto``, ``tel``, ``cid`` and in-page
  ``#fragment`` links. ``javascript:``, ``vbscript:`` and ``data:`` are dropped, except
  ``data:image/<raster>`` on ``<img src>``. Protocol-relative and other relative URLs are dropped
  (an email has no base URL, and ``//host/x`` would silently load a remote resource).
- links get ``rel="noopener noreferrer nofollow"`` and ``target="_blank"``.
- inline ``style`` is kept but filtered per declaration: an allow list of layout-neutral properties
  (no ``position``/``z-index``, which could overlay the client's UI), and any value with ``url(``,
  ``expression(``, a CSS escape, a comment or an unknown function is dropped.
- **remote images** (``<img src="http(s)://…">``) keep their ``src`` and get the attribute
  ``data-remote-image="true"``. A client that blocks remote content must strip or swap ``src`` of
  those elements before inserting the HTML into a live DOM (e.g. after ``DOMParser``), since a
  browser starts loading ``src`` as soon as the element is created.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from typing import Protocol

import nh3

from app.domain.html_fast import FastHTMLParser

_EXTRA_TAGS = {"font", "tfoot", "big", "address", "section", "main"}
_DROPPED_TAGS = {"area", "map"}  # image maps: clickable regions nobody needs in mail
_TAGS = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - _DROPPED_TAGS
# Removed together with everything inside them, so no CSS/JS/markup leaks out as text.
_CLEAN_CONTENT_TAGS = {
    "script", "style", "head", "title", "iframe", "frame", "frameset", "noframes", "object",
    "embed", "applet", "svg", "math", "template", "noscript", "xml", "textarea", "select",
}  # fmt: skip

_GENERIC_ATTRIBUTES = {"style", "dir", "lang", "title", "align", "valign", "bgcolor"}
_SIZE_ATTRIBUTES = {"width", "height"}
_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(attrs) for tag, attrs in copy.deepcopy(nh3.ALLOWED_ATTRIBUTES).items()
}
_ATTRIBUTES["*"] = _GENERIC_ATTRIBUTES
for _tag in ("table", "td", "th", "tr", "col", "colgroup", "img", "hr", "div"):
    _ATTRIBUTES.setdefault(_tag, set()).update(_SIZE_ATTRIBUTES)
_ATTRIBUTES["table"].update({"border", "cellpadding", "cellspacing"})
_ATTRIBUTES["img"].update({"border", "title"})
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES.pop("area", None)

_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_URL_ATTRIBUTES = {"href", "src", "cite", "action", "background", "poster", "longdesc"}
_SAFE_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);", re.IGNORECASE)

_CSS_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "font-variant", "text-align", "text-decoration", "text-indent", "text-transform",
    "letter-spacing", "word-spacing", "line-height", "white-space", "vertical-align", "direction",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-radius", "border-collapse", "border-spacing",
    "width", "height", "max-width", "min-width", "max-height", "min-height",
    "display", "list-style-type", "table-layout", "float", "clear", "overflow", "visibility",
    "opacity",
}  # fmt: skip
_CSS_ALLOWED_FUNCTIONS = {"rgb", "rgba", "hsl", "hsla"}
_CSS_FUNCTION = re.compile(r"([a-z-]*)\s*\(", re.IGNORECASE)
# Belt and braces next to the function allow-list: loaders (url(), image-set()), IE's
# expression()/behavior, Mozilla's -moz-binding, CSS escapes that could spell any of them.
_CSS_FORBIDDEN = re.compile(
    r"url\s*\(|expression|javascript:|vbscript:|behavior|-moz-binding|@import|[\\<>]|/\*"
)

_IMG_TAG = re.compile(r"<img\b[^>]*>")  # nh3 output escapes '>' inside attribute values
_REMOTE_SRC = re.compile(r'\ssrc="https?:', re.IGNORECASE)


class SafeHtml(str):
    """HTML that came out of ``sanitize_html``: sanitizing it again gives it back as it is, so a
    body sanitized once where a message is put together is not sanitized again by each writer
    (its MIME part, its stored body)."""

    __slots__ = ()


def sanitize_html(html: str) -> SafeHtml:
    """Make an untrusted HTML body safe to render inside a web client (see the module docstring)."""
    if isinstance(html, SafeHtml):
        return html
    return SafeHtml(_sanitize(html) if html else "")


def _sanitize(html: str) -> str:
    return _IMG_TAG.sub(_mark_remote_image, _cleaner().clean(html))


@cache
def _cleaner() -> nh3.Cleaner:
    """One nh3 ``Cleaner`` for the process: ``nh3.clean`` with these options builds the
    sanitizer again on every call, three quarters of its time on a short campaign message
    (0.20 against 0.05 ms; the same output)."""
    return nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=_URL_SCHEMES,
        url_relative=_allow_fragment_only,
        filter_style_properties=_CSS_PROPERTIES,
    )


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "style":
        return _filter_css(value) or None
    if attribute in _URL_ATTRIBUTES:
        # Browsers ignore tabs, newlines and leading control characters inside URLs, which
        # is how "java\tscript:" slips past naive filters; judge the URL as a browser would.
        compact = re.sub(r"[\x00-\x20]+", "", value).lower()
        if compact.startswith(("javascript:", "vbscript:", "livescript:")):
            return None
        if compact.startswith("data:") and not (
            tag == "img" and attribute == "src" and _SAFE_DATA_IMAGE.match(compact)
        ):
            return None
    return value


def _allow_fragment_only(url: str) -> str | None:
    return url if url.startswith("#") else None


def _filter_css(style: str) -> str:
    """Keep only allow-listed declarations whose values cannot load or run anything."""
    kept: list[str] = []
    for declaration in style.split(";"):
        prop, colon, value = declaration.partition(":")
        prop, value = prop.strip().lower(), value.strip()
        if not colon or prop not in _CSS_PROPERTIES or not value:
            continue
        if _CSS_FORBIDDEN.search(value.lower()) or any(ord(c) < 0x20 for c in value):
            continue
        functions = {name.lower() for name in _CSS_FUNCTION.findall(value)}
        if not functions <= _CSS_ALLOWED_FUNCTIONS:
            continue
        kept.append(f"{prop}: {value}")
    return "; ".join(kept)


def _mark_remote_image(match: re.Match[str]) -> str:
    tag = match.group(0)
    if not _REMOTE_SRC.search(tag):
        return tag
    return tag[:-1].rstrip("/").rstrip() + ' data-remote-image="true">'


# --- plain text --------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "address", "article", "aside", "center", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "caption",
}  # fmt: skip
_PARAGRAPH_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"}
_SKIPPED_TAGS = {"script", "style", "head", "title", "template", "noscript", "svg", "math"}
_LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # in <pre>: CRLF, CR and LF alike


def collapse_whitespace(text: str) -> str:
    """``re.sub(r"\\s+", " ", text)``: every run of whitespace becomes one space.

    Twice as fast on the text of an HTML mail, and the same: ``str.split()`` and the regex's
    ``\\s`` take the same characters for whitespace (CPython's ``Py_UNICODE_ISSPACE`` in both),
    so the words between the runs are the same, and a run at either end becomes one space.
    """
    words = text.split()
    if not words:
        return " " if text else ""
    joined = " ".join(words)
    if text[0].isspace():
        joined = " " + joined
    if text[-1].isspace():
        joined += " "
    return joined


class _TextRenderer(FastHTMLParser):
    """Renders HTML as readable text: blocks on their own lines, quotes as "> " lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.current_length = 0  # len("".join(self.current)), kept as pieces are written
        self.line_depth = 0  # blockquote depth of the line being written
        self.quote_depth = 0
        self.skip_depth = 0
        self.pre_depth = 0
        self.links: list[tuple[str | None, int]] = []  # (href, length of current at <a>)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip_depth += 1
        elif tag == "br":
            self.newline(force=True)
        elif tag in _PARAGRAPH_TAGS:
            self.paragraph()
            if tag == "blockquote":
                self.quote_depth += 1
            elif tag == "pre":
                self.pre_depth += 1
        elif tag == "li":
            self.newline()
            self.write("- ")
        elif tag in _BLOCK_TAGS:
            self.newline()
        elif tag in ("td", "th"):
            if self.current and self.current[-1].strip():
                self.write(" ")
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), self.current_length))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _PARAGRAPH_TAGS:
            self.paragraph()
            if tag == "blockquote":
                self.quote_depth = max(0, self.quote_depth - 1)
            elif tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.newline()
        elif tag == "a" and self.links:
            self.end_link(*self.links.pop())

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            for i, piece in enumerate(_LINE_BREAK.split(data)):
                if i:
                    self.newline(force=True)
                self.write(piece)
            return
        text = collapse_whitespace(data)
        if not self.current or self.current[-1].endswith(" "):
            text = text.lstrip()
        self.write(text)

    def end_link(self, href: str | None, start: int) -> None:
        if not href or not href.lower().startswith(_LINK_SCHEMES):
            return
        label = "".join(self.current)[start:].strip()
        shown = href[7:] if href.lower().startswith("mailto:") else href
        if label in (href, shown):
            return
        self.write(f" <{shown}>" if label else shown)

    def write(self, text: str) -> None:
        if not text:
            return
        if not self.current:
            self.line_depth = self.quote_depth
        self.current.append(text)
        self.current_length += len(text)

    def newline(self, force: bool = False) -> None:
        line = "".join(self.current).rstrip()
        if line or force:
            prefix = "> " * (self.line_depth if line else self.quote_depth)
            self.lines.append(prefix + line if line else prefix.rstrip())
        self.current = []
        self.current_length = 0
        self.links = [(href, 0) for href, _ in self.links]

    def paragraph(self) -> None:
        self.newline()
        if self.lines and self.lines[-1].strip("> "):
            self.lines.append("")

    def text(self) -> str:
        while self.links:  # unclosed <a> at the end of a truncated body
            self.end_link(*self.links.pop())
        self.newline()
        out: list[str] = []
        for line in self.lines:
            if not line.strip("> ") and out and not out[-1].strip("> "):
                continue  # at most one blank line in a row
            out.append(line)
        return "\n".join(out).strip("\n")


class HtmlListener(Protocol):
    """Sees the parse ``html_to_text`` makes of a document: every start tag, end tag and text
    in order (``html.parser`` events, character references converted), then ``done``.

    This is how a second reader of the same HTML, the spam model's, shares the one parse
    instead of making its own (``ml.message_text.SharedHtml``). ``done``'s ``error`` is the
    exception that stopped ``html.parser`` early (the events seen are those before it);
    ``complete`` is False when the renderer's own code failed, after which the events seen are
    not what ``html.parser`` alone would have given.
    """

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None: ...

    def handle_endtag(self, tag: str) -> None: ...

    def handle_data(self, data: str) -> None: ...

    def done(self, html: str, error: Exception | None, complete: bool) -> None: ...


class _ListenedRenderer(_TextRenderer):
    """``_TextRenderer`` passing each event to a listener first. ``in_own_code`` stays True
    when the renderer's own handling of an event raised (the listener saw that event, but
    ``html.parser`` alone would have gone on)."""

    def __init__(self, listener: HtmlListener) -> None:
        super().__init__()
        self.listener = listener
        self.in_own_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.listener.handle_starttag(tag, attrs)
        self.in_own_code = True
        super().handle_starttag(tag, attrs)
        self.in_own_code = False

    def handle_endtag(self, tag: str) -> None:
        self.listener.handle_endtag(tag)
        self.in_own_code = True
        super().handle_endtag(tag)
        self.in_own_code = False

    def handle_data(self, data: str) -> None:
        self.listener.handle_data(data)
        self.in_own_code = True
        super().handle_data(data)
        self.in_own_code = False


def html_to_text(html: str, listener: HtmlListener | None = None) -> str:
    """Plain-text rendering of an HTML body (for text/plain alternatives, search and snippets).

    Line breaks may be CRLF, CR or LF: the rendering is the same (outside ``<pre>`` whitespace
    runs become one space, inside it each kind ends a line). ``listener`` sees the same parse.
    """
    if not html:
        return ""
    renderer = _TextRenderer() if listener is None else _ListenedRenderer(listener)
    error: Exception | None = None
    try:
        renderer.feed(html)
        renderer.close()
    except Exception as exc:  # html.parser is tolerant, but never let a body break us
        error = exc
    if listener is not None:
        assert isinstance(renderer, _ListenedRenderer)
        listener.done(html, error, not renderer.in_own_code)
    return renderer.text()


# --- snippets ----------------------------------------------------------------------------------

_ATTRIBUTION = re.compile(
    r"^\s*(?:On\s.+\swrote|Am\s.+\sschrieb\s.+|Le\s.+\sa\s+écrit|El\s.+\sescribió)\s*:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Am|Le|El)\s", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"(?:wrote|schrieb|a\s+écrit|escribió)\s*:\s*$", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{3,}\s*(?:Original Message|Forwarded message)\s*-{3,}\s*$", re.I
)


def make_snippet(text: str, length: int = 200) -> str:
    """A one-line preview: quoted replies and attribution lines dropped when there is other text,
    whitespace collapsed, cut at a word boundary with "…" so the result is at most ``length``."""
    if not text:
        return ""
    # Only the first ``length`` characters of the sender's own words can show: stop reading
    # lines once there are more (a long body is otherwise matched line by line to the end).
    words: list[str] = []
    chars = -1
    for line in _own_lines(text.splitlines()):
        for word in line.split():
            words.append(word)
            chars += len(word) + 1
        if chars > length:
            break
    collapsed = " ".join(words) or " ".join(text.split())
    if len(collapsed) <= length:
        return collapsed
    cut = collapsed[: max(1, length - 1)]
    if collapsed[len(cut)] != " ":
        space = cut.rfind(" ")
        if space > length // 2:
            cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def _own_lines(lines: list[str]) -> Iterator[str]:
    """The lines the sender wrote, without quoted history (lazily: callers may stop early)."""
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        stripped = line.strip()
        if stripped.startswith(">") or _ATTRIBUTION.match(line):
            continue
        if _ORIGINAL_MESSAGE.match(line):
            break  # everything below is the forwarded or replied-to message
        # Clients wrap long attributions: "On Mon, 1 Jan 2024, Bob <bob@" / "x.org> wrote:"
        if (
            _ATTRIBUTION_START.match(line)
            and i + 1 < len(lines)
            and _ATTRIBUTION_END.search(lines[i + 1])
        ):
            skip_next = True
            continue
        yield line
