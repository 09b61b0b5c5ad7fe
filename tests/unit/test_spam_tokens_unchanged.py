"""The fast tokenizer and scorer give exactly what the committed model was trained and judged with.

``reference_text_tokens`` is the tokenizer as it was when ``spam-nb-1.0.0`` was trained (the
regex-per-position version); the shortcuts in ``ml.features`` and ``ml.message_text`` only skip
searches that cannot match, so both must agree token for token, in order, on any input. The
same for ``weigh`` (hashing all tokens in one call) and ``reasons`` (a heap instead of a sort).
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from ml import features as f
from ml.message_text import _URL, _URL_FAST, MessageText, read_message
from ml.model import SpamModel, TrainingConfig, bucket_of, fit
from ml.scoring import Evidence, reasons, weigh

DATA = Path(__file__).resolve().parents[1] / "data"


def _reference_run_tokens(text: str, prefix: str, pairs: bool = False) -> list[str]:
    out: list[str] = []
    if f._DATE.search(text):
        out.append("shape:DATE")
        text = f._DATE.sub(" ", text)
    previous = ""
    for run in f._RUN.findall(text):
        if pairs and run.isalpha() and len(run) <= f._MAX_WORD:
            word = run.casefold()
            if previous:
                out.append(f"pair:{previous}_{word}")
            previous = word
        if run.isdigit():
            out.append(f._number_shape(run))
        elif len(run) > f._MAX_WORD:
            out.append("shape:LONG_TOKEN")
        elif run.isalpha():
            if len(run) > 1:
                out.append(prefix + run.casefold())
        else:
            out.append("shape:ALNUM")
    return out


def _reference_shape_tokens(text: MessageText) -> list[str]:
    out: list[str] = []
    subject, body = text.subject, text.body
    letters = [c for c in subject if c.isalpha()]
    if not subject.strip():
        out.append("shape:NO_SUBJECT")
    elif len(letters) >= 5 and f._ratio(sum(c.isupper() for c in letters), len(letters)) > 0.7:
        out.append("shape:ALLCAPS_SUBJECT")
    if "!" in subject:
        out.append("shape:EXCLAIM_SUBJECT")
    if f._MONEY.search(subject):
        out.append("shape:MONEY_SUBJECT")
    words = [w for w in f._RUN.findall(body) if w.isalpha() and len(w) > 2]
    out.append("shape:WORDS_" + f._bucket(len(words)))
    if len(words) >= 10 and f._ratio(sum(w.isupper() for w in words), len(words)) > 0.3:
        out.append("shape:ALLCAPS_BODY")
    if body.count("!") >= 3:
        out.append("shape:EXCLAIM_BODY")
    if "!!" in body or "!!" in subject:
        out.append("shape:EXCLAIM_RUN")
    if f._MONEY.search(body):
        out.append("shape:MONEY")
    if f._PERCENT.search(body):
        out.append("shape:PERCENT")
    if f._PHONE.search(body):
        out.append("shape:PHONE")
    if f._EMAIL_ADDRESS.search(body):
        out.append("shape:EMAIL_ADDRESS")
    if len(f._QUOTED_LINE.findall(body)) >= 2:
        out.append("shape:QUOTED_REPLY")
    if f._CJK.search(body) or f._CJK.search(subject):
        out.append("shape:SCRIPT_CJK")
    if f._CYRILLIC.search(body):
        out.append("shape:SCRIPT_CYRILLIC")
    if body and f._ratio(sum(ord(c) > 127 for c in body[:4000]), len(body[:4000])) > 0.2:
        out.append("shape:MOSTLY_NON_ASCII")
    if text.html:
        out.append("shape:HTML")
        if text.images and len(words) < 50:
            out.append("shape:IMAGES_LITTLE_TEXT")
    if text.images:
        out.append("shape:IMAGES")
    for ctype in sorted(set(text.attachments)):
        out.append("shape:ATTACHMENT_" + ctype.split("/")[0].upper())
    return out


def _reference_url_tokens(urls: tuple[str, ...]) -> list[str]:
    out = ["shape:URLS_" + f._bucket(len(urls))]
    for url in urls:
        if url.casefold().startswith(("mailto:", "cid:", "#")):
            continue
        try:
            host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
        except ValueError:
            continue
        if not host:
            continue
        if f._IPV4.match(host):
            out.append("shape:URL_IP")
            continue
        domain = f.registrable_domain(host)
        if "." in domain:
            out.append("url_host:" + domain)
    return out


def reference_text_tokens(text: MessageText) -> list[str]:
    found = _reference_run_tokens(text.subject, "subject:")
    found += _reference_run_tokens(f._LINKISH.sub(" ", text.body), "word:", pairs=True)
    found += _reference_url_tokens(text.urls)
    found += _reference_shape_tokens(text)
    return list(dict.fromkeys(found))


# Letters that case-fold onto the ones the shortcuts look for (ſ → s, ı/İ → i, K → k), digits
# (ASCII and not),
# the characters links, addresses, money and dates are made of, CJK and Cyrillic.
_ALPHABET = list("hHtTpPsSſwWwW:/.@-_+ monMONtueTUEfriFRIsatSUNıİK0123456789٣$€%!>\n\t中ж,()")
_PIECES = [
    "http://a.example/x",
    "HTTPS://B.Example.CO.UK/p?q=1",
    "httpſ://x.org",
    "WWW.shop.test",
    "www.",
    "mail me@example.com now",
    "a.b+c@d-e.f.g",
    "Mon, 21 Aug 2002",
    "on fri, march 3",
    "Sat Dec",
    "10:54 pm +0200",
    "2002-08-21",
    "8/21/02",
    "$100",
    "50 USD",
    "99 %",
    "(555) 123-4567",
    "> quoted\n> again",
    "FREE MONEY!!!",
    "v1agra",
    "a" * 25,
    "1" * 25,
    "frı sat ſun",
]


def _text_of(
    rng: random.Random,
    pieces: list[str],
    alphabet: list[str],
    *,
    parts: int,
    piece_share: float,
    run: int,
    joiners: list[str],
) -> str:
    """Up to ``parts`` pieces (whole ones, ``piece_share`` of them, or runs of up to ``run``
    characters of ``alphabet``), joined by one of ``joiners``."""
    chosen = []
    for _ in range(rng.randint(0, parts)):
        if rng.random() < piece_share:
            chosen.append(rng.choice(pieces))
        else:
            chosen.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, run))))
    return rng.choice(joiners).join(chosen)


def _random_text(rng: random.Random) -> str:
    return _text_of(rng, _PIECES, _ALPHABET, parts=30, piece_share=0.3, run=12, joiners=[" ", ""])


def test_fast_regexes_match_exactly_what_the_originals_match() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        text = _random_text(rng)
        assert _URL_FAST.findall(text) == _URL.findall(text), text
        assert f._without_links(text) == f._LINKISH.sub(" ", text), text
        if "@" not in text:
            assert f._URLISH.sub(" ", text) == f._LINKISH.sub(" ", text), text
        assert f._may_hold_date(text) or not f._DATE.search(text), text
        assert f._has_digit(text) == bool(f._DIGIT.search(text)), text


def test_tokens_of_random_text_are_unchanged() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        body = _random_text(rng)
        text = MessageText(
            subject=_random_text(rng)[:80],
            body=body,
            html=rng.random() < 0.3,
            urls=tuple(_URL.findall(body)),
            images=rng.choice([0, 0, 1, 3]),
            attachments=tuple(rng.sample(["image/png", "application/pdf"], rng.randint(0, 2))),
        )
        assert f.text_tokens(text) == reference_text_tokens(text), text


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DATA.rglob("*.eml")),
    ids=lambda p: str(p.relative_to(DATA)),
)
def test_tokens_of_the_test_messages_are_unchanged(path: Path) -> None:
    text = read_message(path.read_bytes())
    assert f.text_tokens(text) == reference_text_tokens(text)


def test_tokens_of_a_large_html_newsletter_are_unchanged() -> None:
    rng = random.Random(3)
    words = ["lorem", "Ipsum", "FREE", "offer", "click", "here", "Mon", "2002", "x1y"]
    rows = []
    for n in range(800):
        line = " ".join(rng.choice(words) for _ in range(12))
        rows.append(f'<p>{line}</p><td><a href="https://t{n % 7}.example/c/{n}">{line}</a></td>')
        if n % 50 == 0:
            rows.append(f'<img src="http://10.0.0.{n % 9}/i.png">')
    raw = (
        "Subject: Weekly news\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>"
        + "\r\n".join(rows)
        + "</body></html>\r\n"
    ).encode()
    text = read_message(raw)
    assert text.html and len(text.body) > 20_000
    assert f.text_tokens(text) == reference_text_tokens(text)


# Everything the ASCII fast paths have to get right, and the non-ASCII characters that case-fold,
# join runs or hide in them: ſ, ı, İ, the Kelvin sign, a combining mark, "ß", Greek final sigma.
_TRICKY = list("aAbBzZmMoOnNtTuUeEsSyYxX0123456789_ .,:;-'\n\t!?>/@$%ſıİ\u212a\u0301ßΣς中ж")
_TRICKY_PIECES = [
    "",
    "a",
    "I",
    "OK",
    "FREE",
    "Free",
    "x" * 20,
    "y" * 21,
    "Z" * 30,
    "abc123",
    "a1" * 11,
    "7" * 21,
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "under_score",
    "_lead",
    "trail_",
    "Mon, March 3",
    "monday",
    "Tue 10:30 pm",
    "2024-01-31",
    "12/31/2024",
    "caf\u00e9",
    "cafe\u0301",
    "\u212aelvin",
    "ſtop",
    "İstanbul",
    "ıdea",
    "STRASSE straße",
    "http://Example.COM/Path_x?q=1",
    "www.shop.test/sale",
    "a@b.example",
]


def _tricky_text(rng: random.Random, ascii_only: bool) -> str:
    text = _text_of(
        rng,
        _TRICKY_PIECES,
        _TRICKY,
        parts=60,
        piece_share=0.4,
        run=25,
        joiners=[" ", "", "\n", "  "],
    )
    if ascii_only:
        text = text.encode("ascii", "ignore").decode()
    return text


@pytest.mark.parametrize("ascii_only", [True, False])
def test_fast_paths_give_the_reference_tokens_on_tricky_text(ascii_only: bool) -> None:
    rng = random.Random(23 if ascii_only else 29)
    for n in range(4000):
        body = _tricky_text(rng, ascii_only)
        if n % 5 == 0:  # some all upper case, for the ALLCAPS_BODY bound
            body = body.upper()
        text = MessageText(
            subject=_tricky_text(rng, ascii_only)[:80],
            body=body,
            html=rng.random() < 0.5,
            urls=tuple(_URL.findall(body)) if rng.random() < 0.7 else (),
            images=rng.choice([0, 1]),
            attachments=(),
        )
        assert f.text_tokens(text) == reference_text_tokens(text), text
        if body.isascii():
            assert f._ascii_runs(body) == f._RUN.findall(body), body
            runs = f._ascii_runs(body.lower())
            lengths = list(map(len, runs))
            for dated in (False, True):
                fast = f._ascii_body_tokens(dated, runs, lengths, f._has_digit(body), "word:")
                slow = dict.fromkeys(f._tokens_of_runs(dated, f._RUN.findall(body), "word:", True))
                assert list(fast) == list(slow), body
        words = [w for w in f._RUN.findall(body) if w.isalpha() and len(w) > 2]
        caps = len(words) >= 10 and f._ratio(sum(w.isupper() for w in words), len(words)) > 0.3
        assert f._words_of_body(body, None) == (len(words), caps), body


def test_edge_bodies_give_the_reference_tokens() -> None:
    bodies = [
        "",
        " ",
        "a",
        "1",
        "a b c",
        "x" * 21,
        "1 2 3 x" + "y" * 25,
        "12345 abc a1b2 " + "Q" * 22 + " 7 zz 99 zz",
        "abc 1 def 22 ghi 333 jkl 4444 mno 55555 pqr v1agra stu",
        "WORD " * 12 + "word " * 3,
        "Word " * 30,
        "A B C D E F G H I J K L M N word word word",
        "ABC " * 10 + "abc " * 21,  # 10 of 31 words upper case: just over 30%
        "ABC " * 9 + "abc " * 21,  # 9 of 30: not over
        "Abc " * 40 + "ABC " * 12,
        "Mon, March 3 and then some text",
        "see http://a.example/x and www.b.example/y then more",
        "price $100 on 2024-01-31 at 10:30 pm",
        "\u212a \u212aa ſ ſſ ı ıı İ İİ",
        "cafe\u0301 caf\u00e9",
        "_ __ a_b _a_ b_",
    ]
    for body in bodies:
        for subject in ("", "Hello", "1 x" + "y" * 25, body):
            for urls in ((), tuple(_URL.findall(body))):
                text = MessageText(subject, body, True, urls, 1, ())
                assert f.text_tokens(text) == reference_text_tokens(text), (subject, body)


def test_url_tokens_are_unchanged() -> None:
    urls = [
        "http://Example.COM/Path",
        "HTTPS://www.mail.Example.co.uk",
        "https://a.b.example?x=1",
        "http://x.example#frag",
        "http://user@host.example/",
        "http://host.example:8080/",
        "http://[::1]/",
        "http://[bad/",
        "http://10.0.0.1/i.png",
        "http://999.1.2.3/",
        "www.shop.test/sale",
        "www.shop.test",
        "www.x.example/?u=http://y.example",
        "mailto:a@b.example",
        "MAILTO:a@b.example",
        "cid:part1",
        "#top",
        " http://lead.example/",
        "http://ta\tb.example/",
        "http://tab.example/\t",
        "http://under_score.example/",
        "http://.example./",
        "http://localhost/",
        "httpſ://x.org",
        "http://ünï.example/",
        "http://xn--n3h.example/",
        "ftp://files.example/",
        "http:/one.example",
        "http://",
        "",
    ]
    rng = random.Random(5)
    for _ in range(300):
        sample = tuple(rng.choice(urls) for _ in range(rng.randint(0, 12)))
        assert f._url_tokens(sample) == _reference_url_tokens(sample), sample
    assert f._url_tokens(tuple(urls)) == _reference_url_tokens(tuple(urls))


def _reference_weigh(
    tokens: list[str], model: SpamModel
) -> tuple[tuple[str, ...], tuple[float, ...], float]:
    """``ml.scoring.weigh`` as it was: a bucket per token in Python, the first token names it."""
    first_token: dict[int, str] = {}
    for token in tokens:
        first_token.setdefault(bucket_of(token, model.config.n_features), token)
    buckets = np.fromiter(first_token, dtype=np.int64, count=len(first_token))
    values = model.token_log_odds[buckets]
    mean = float(values.sum()) / max(len(buckets), 1)
    return tuple(first_token.values()), tuple(values.tolist()), mean


def _reference_reasons(evidence: Evidence, towards_spam: bool, limit: int = 5) -> list[str]:
    sign = 1.0 if towards_spam else -1.0
    ranked = sorted(
        (sign * value, token)
        for token, value in zip(evidence.tokens, evidence.log_odds, strict=True)
        if sign * value > 0
    )
    return [token for _, token in reversed(ranked[-limit:])]


@pytest.mark.parametrize("n_features", [2**6, 2**20])
def test_weighing_and_reasons_are_unchanged(n_features: int) -> None:
    rng = random.Random(n_features)
    texts = [_random_text(rng) for _ in range(400)]
    token_lists = [f.message_tokens(f"Subject: {t[:40]}\n\n{t}".encode()) for t in texts]
    labels = [i % 3 == 0 for i in range(len(token_lists))]
    config = TrainingConfig(n_features=n_features, calibration_folds=3, min_df=1)
    model = fit(token_lists, labels, config, "0.1")  # 2**6 buckets: collisions everywhere
    for tokens in [*token_lists, [], ["word:x"], ["word:x", "word:x"]]:
        evidence = weigh(tokens, model)
        assert (evidence.tokens, evidence.log_odds, evidence.mean_log_odds) == _reference_weigh(
            tokens, model
        )
        for towards_spam in (True, False):
            assert reasons(evidence, towards_spam) == _reference_reasons(evidence, towards_spam)
