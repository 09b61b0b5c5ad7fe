"""One parse of an HTML body serves storage and the spam model (issue 17, "parse once").

The MX renders an HTML body to text for storage (``app.domain.html_safety.html_to_text``);
``ml.SharedHtml`` listens to that parse and gives the model the text, links and image count its
own ``html_to_text`` would have found, so the model does not parse the HTML again. These tests
hold it to "exact": every stored field and every verdict (score, reasons) is what it was with
two parses, on the test messages, the benchmark mix and hostile HTML.
"""

from __future__ import annotations

import random
from email import policy
from pathlib import Path

import pytest

import ml
from app.adapters.spam_scorer import ModelScorer
from app.domain import html_safety
from app.domain.html_safety import html_to_text
from app.domain.parsing import parse_message, parse_tree
from app.services.inbound.analysis import analyze
from ml import message_text
from ml.features import text_tokens
from ml.message_text import read_message, read_tree

DATA = Path(__file__).resolve().parents[1] / "data"

_HOSTILE_HTML = [
    "<p>one\r\ntwo</p>\r\n<pre>a\rb\r\nc\nd</pre>\r\n",
    "<html><head><title>T</title><style>p{}</style></head><body><p>Hi &amp; bye &#x41;</p>",
    '<a href="https://x.example/a">x</a><img src="http://10.0.0.1/p.png"><form action="/f">',
    "<table><tr><td>1</td><td>$ 100\r\n%</td></tr></table><br/><br>\r\n\r\n",
    "<blockquote>quoted<blockquote>deeper</blockquote></blockquote><pre>\r\n\r\n</pre>",
    "<p>unclosed <b>bold <a href='mailto:a@b.example'>mail",
    "<![CDATA[x]]><!-- c --><?pi?><!DOCTYPE html><script>var a = '<p>';</script>after",
    "<div>a</div\r\n><p\r\n class=x>b</p>&unknown; &#99999999; &#0;",
    "<pre>\r</pre><pre>x\r\r\ny</pre>",
]


def _message(html: str, charset: str = "utf-8") -> bytes:
    head = f"Subject: test\r\nContent-Type: text/html; charset={charset}\r\n\r\n"
    return head.encode() + html.encode(charset, "replace")


def _scorer() -> ModelScorer:
    scorer = ModelScorer()
    scorer.load()
    return scorer


def _newsletters(count: int = 12) -> list[bytes]:
    """HTML-only newsletters as the inbound benchmark sends them (CRLF, paragraphs, link tables,
    images; ``shared/peers/msggen.py``), ~20 KB each."""
    rng = random.Random(42)
    words = ["ka", "lomi", "neru", "Tavo", "SIDE", "pa", "zure", "an", "el", "or9", "$5", "50%"]
    out = []
    for n in range(count):
        lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>News</title>']
        lines.append("<style>p{color:#333}</style></head><body>")
        while sum(map(len, lines)) < 20_000:
            kind = rng.random()
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
            if kind < 0.6:
                lines += ["<p>", text[:70], text[70:], "</p>"]
            elif kind < 0.85:
                lines.append(f'<table><tr><td><a href="https://e{n}.example/{rng.random()}">')
                lines += [text[:30], "</a></td></tr></table>"]
            else:
                lines.append(f'<h2>{text[:20]}</h2><img src="https://cdn.example/{n}.png">')
        lines.append("</body></html>")
        head = f"Subject: html {n}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        out.append(head.encode() + "\r\n".join(lines).encode() + b"\r\n")
    return out


def _all_messages() -> list[bytes]:
    files = [p.read_bytes() for p in sorted(DATA.rglob("*.eml"))]
    return files + _newsletters() + [_message(h) for h in _HOSTILE_HTML]


@pytest.fixture(scope="module")
def scorer() -> ModelScorer:
    return _scorer()


def test_sharing_changes_no_stored_field_and_no_verdict(scorer: ModelScorer) -> None:
    shared_somewhere = 0
    for raw in _all_messages():
        parsed, verdict = analyze(raw, scorer, True)
        assert parsed == parse_message(raw)
        assert verdict == scorer.score(raw)
        again = scorer.shared_html()
        assert parse_message(raw, html_listener=again) == parsed
        assert scorer.score(raw, again) == verdict
        shared_somewhere += bool(again.documents)
    assert shared_somewhere >= 20  # the HTML-only messages (12 newsletters, 9 hostile, files)


def test_the_model_reads_the_same_text_from_the_shared_parse() -> None:
    for raw in _all_messages():
        shared = ml.SharedHtml()
        parse_message(raw, html_listener=shared)
        assert read_message(raw, shared.documents) == read_message(raw)
        assert text_tokens(read_message(raw, shared.documents)) == text_tokens(read_message(raw))


def test_the_model_reads_the_storage_parses_mime_tree_as_its_own() -> None:
    headerless = b"Subject: no type\n\n--b1\nContent-Type: text/plain\n\nhidden part\n--b1--\n"
    read_from_tree = 0
    for raw in [*_all_messages(), headerless]:
        tree = parse_tree(raw)
        assert tree is not None
        shared = ml.SharedHtml()
        parse_message(raw, html_listener=shared, tree=tree)
        policies = [part.policy for part in tree.walk()]
        assert read_tree(tree, raw, shared.documents) == read_message(raw, shared.documents)
        assert [part.policy for part in tree.walk()] == policies  # given back
        assert parse_message(raw, tree=tree) == parse_message(raw)  # and left as it was
        read_from_tree += tree.get("Content-Type") is not None or tree.is_multipart()
    assert read_from_tree >= 40
    # A body with no Content-Type is sniffed for MIME from the raw bytes, as before.
    assert "hidden" in read_tree(parse_tree(headerless), headerless).body  # type: ignore[arg-type]


def test_both_policies_store_a_header_as_the_same_raw_string() -> None:
    """What ``read_tree`` relies on: a tree parsed with ``email.policy.default`` holds each
    header as compat32 would, so reading it with compat32 is reading compat32's own parse."""
    sources = [
        ["Subject: plain\r\n"],
        ["Subject:   =?utf-8?q?caf=C3=A9?=\r\n", "\t folded\r\n"],
        ["Content-Type: multipart/mixed;\n", ' boundary="b:1"\n'],
        ["X-Empty:\r\n"],
        ["Content-Disposition: attachment; filename*=UTF-8''na%C3%AFve.txt\r"],
        ["To: a@x.example,\r\n", " \udcc3\udca9@y.example\r\n"],  # raw 8-bit, escaped
    ]
    for lines in sources:
        assert policy.default.header_source_parse(lines) == policy.compat32.header_source_parse(
            lines
        )


def test_the_mx_parses_a_message_once(scorer: ModelScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    parses = []
    original = message_text.parse_bytes
    monkeypatch.setattr(message_text, "parse_bytes", lambda *a: parses.append(1) or original(*a))
    raw = (DATA / "eml" / "multipart_alternative.eml").read_bytes()
    _, verdict = analyze(raw, scorer, True)
    assert parses == []
    assert verdict == scorer.score(raw)  # which parses on its own
    assert parses == [1]
    big = raw.replace(b"\n\n", b"\nX-Pad: " + b"x" * 70 + b"\n\n", 1) + b"\n" * 300_000
    analyze(big, scorer, True)  # longer than the model reads: it parses its own prefix
    assert parses == [1, 1]


def test_shared_results_are_those_of_the_models_own_parse() -> None:
    rng = random.Random(5)
    pieces = ["<p>", "</p>", "<a href='https://e.example/x'>", "</a>", "<img src=i.png>", "&amp;"]
    pieces += ["<script>", "</script>", "<pre>", "</pre>", "\r\n", "\r", "\n", "word ", "$5 "]
    documents = list(_HOSTILE_HTML)
    for _ in range(300):
        documents.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))))
    for document in documents:
        shared = ml.SharedHtml()
        html_to_text(document, shared)
        if document:
            assert shared.documents[document] == message_text.html_to_text(document)


def test_the_stored_rendering_ignores_the_kind_of_line_break() -> None:
    """The text body is rendered from the HTML as decoded (CRLF as it came over SMTP, which
    is what the model decodes too), not from the newline-normalized copy: same text."""
    for document in _HOSTILE_HTML:
        lf = document.replace("\r\n", "\n").replace("\r", "\n")
        assert html_to_text(document) == html_to_text(lf) == html_to_text(lf.rstrip("\n"))
    assert html_to_text("<pre>a\rb\r\nc</pre>") == "a\nb\nc"


def test_a_document_is_not_shared_when_the_renderer_itself_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = html_safety._TextRenderer.handle_data

    def failing(self: html_safety._TextRenderer, data: str) -> None:
        if "boom" in data:
            raise KeyError(data)
        original(self, data)

    monkeypatch.setattr(html_safety._TextRenderer, "handle_data", failing)
    shared = ml.SharedHtml()
    assert html_to_text("<p>fine</p><p>boom</p><p>more</p>", shared) == "fine"
    assert shared.documents == {}  # the model parses it itself: "more" is part of its text
    html_to_text("<p>fine</p>", shared)
    assert shared.documents == {"<p>fine</p>": ("\n fine", [], 0)}


def test_a_parse_stopped_by_an_error_the_model_would_not_catch_is_not_shared() -> None:
    shared = ml.SharedHtml()
    shared.handle_data("x")
    shared.done("<p>x", RuntimeError("not html.parser's"), True)
    assert shared.documents == {}
    shared.handle_data("y")
    shared.done("<p>y", ValueError("malformed"), True)
    assert shared.documents == {"<p>y": ("y", [], 0)}  # as the model's own parse keeps it
