"""Features shared by training and scoring: human-readable tokens from Subject + body.

Tokens are namespaced so a reason reads on its own: ``subject:free``, ``word:viagra``,
``pair:click_here``, ``url_host:example.com``, ``num:dddd``, ``shape:ALLCAPS_SUBJECT``.
Everything is case-folded and numbers become shapes, so the model learns *kinds* of content
rather than the exact strings of one corpus; every token can be computed from a message with
no headers but its Subject. Each token appears once per message (Boolean features: Metsis et
al. 2006 found Boolean multinomial NB the strongest of the NB variants for spam).
"""

from __future__ import annotations

import re
from email.message import Message
from urllib.parse import urlsplit

from ml.message_text import MessageText, read_message

_RUN = re.compile(r"[^\W_]+")
_MONEY = re.compile(r"[$€£]\s?\d|\d\s?(?:usd|dollars?|euros?)\b", re.I)
_PERCENT = re.compile(r"\d\s?%")
_PHONE = re.compile(r"(?<!\d)\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)")
_EMAIL_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?"
# Dates and times say when a corpus was collected, not what a message is: one shape for all.
_DATE = re.compile(
    rf"\b(?:{_DAY},?\s+)?(?:\d{{1,2}}\s+{_MONTH}\s+\d{{2,4}}|{_MONTH}\s+\d{{1,2}}(?:,\s*\d{{4}})?)\b"
    rf"|\b{_DAY},?\s+(?={_MONTH}|\d)"
    r"|\b\d{4}-\d\d-\d\d\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    r"|\b\d{1,2}:\d\d(?::\d\d)?(?:\s*[ap]\.?m\b\.?)?(?:\s*[+-]\d{4})?",
    re.I,
)
_LINKISH = re.compile(r"(?:https?://|www\.)[^\s<>\"']+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)
# _LINKISH without its address branch, for text with no "@" (where that branch cannot match).
# The same matches, written so that the regex engine can skip to an "h" or "w" instead of
# trying every position: under re.I, "s" also matches "ſ" and no other of these letters has a
# non-ASCII twin.
_URLISH = re.compile(r"[HhWw](?:(?<=[Hh])[Tt][Tt][Pp][Ssſ]?://|(?<=[Ww])[Ww][Ww]\.)[^\s<>\"']+")
_DIGIT = re.compile(r"\d")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_QUOTED_LINE = re.compile(r"^[ \t]*>", re.M)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Second-level labels under which registrations happen one level deeper (example.co.uk).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go"})
_MAX_WORD = 20


def _bucket(count: int) -> str:
    """0, 1, 2-3, 4-7, ...: a log2 bucket, so counts generalise across message sizes."""
    if count <= 1:
        return str(count)
    low = 1 << (count.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


def _number_shape(digits: str) -> str:
    return "num:" + ("d" * len(digits) if len(digits) <= 4 else "5+")


def _may_hold_date(text: str) -> bool:
    """False only when ``_DATE`` cannot match: every branch needs a digit but the bare weekday
    one (``Mon, March``), which needs a day name. The regex tries every position and costs more
    than the rest of tokenizing, so text without either (most of it) skips it. Under re.I "ı"
    matches "i" and "ſ" matches "s" though ``str.lower`` keeps them: text with those is searched.
    """
    if _has_digit(text) or "ı" in text or "ſ" in text:
        return True
    lowered = text.lower()
    return any(day in lowered for day in _DAY_NAMES)


def _has_digit(text: str) -> bool:
    """``_DIGIT.search(text)``; in ASCII text (most of it) ten substring scans are faster."""
    if text.isascii():
        return any(digit in text for digit in "0123456789")
    return _DIGIT.search(text) is not None


def _runs(text: str) -> tuple[bool, list[str]]:
    """Whether a date shape was seen, and the word runs of ``text`` with dates blanked out."""
    if _may_hold_date(text) and _DATE.search(text):
        return True, _RUN.findall(_DATE.sub(" ", text))
    return False, _RUN.findall(text)


def _run_tokens(text: str, prefix: str, pairs: bool = False) -> list[str]:
    """Words (case-folded), number and date shapes of a text, in order; with ``pairs``, also
    each two adjacent words (``pair:click_here``): phrases carry what single words do not."""
    dated, runs = _runs(text)
    return _tokens_of_runs(dated, runs, prefix, pairs)


def _tokens_of_runs(dated: bool, runs: list[str], prefix: str, pairs: bool) -> list[str]:
    out: list[str] = ["shape:DATE"] if dated else []
    append = out.append
    previous = ""
    for run in runs:
        if run.isalpha():  # never also a digit run
            if len(run) > _MAX_WORD:
                append("shape:LONG_TOKEN")
                continue
            word = run.casefold()
            if pairs:
                if previous:
                    append(f"pair:{previous}_{word}")
                previous = word
            if len(run) > 1:
                append(prefix + word)
        elif run.isdigit():
            append(_number_shape(run))
        elif len(run) > _MAX_WORD:
            append("shape:LONG_TOKEN")
        else:  # letters and digits mixed: ids, codes, obfuscation (v1agra)
            append("shape:ALNUM")
    return out


def _without_links(text: str) -> str:
    """``_LINKISH.sub(" ", text)``; its address branch needs an "@", so most text skips it."""
    return _LINKISH.sub(" ", text) if "@" in text else _URLISH.sub(" ", text)


def registrable_domain(host: str) -> str:
    """The registrable part of a host name: www.mail.example.co.uk → example.co.uk."""
    labels = [label for label in host.casefold().strip(".").split(".") if label]
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _url_tokens(urls: tuple[str, ...]) -> list[str]:
    out = ["shape:URLS_" + _bucket(len(urls))]
    for url in urls:
        if url.casefold().startswith(("mailto:", "cid:", "#")):
            continue
        try:
            host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
        except ValueError:
            continue
        if not host:
            continue
        if _IPV4.match(host):
            out.append("shape:URL_IP")  # hosts without a name: throwaway servers
            continue
        domain = registrable_domain(host)
        if "." in domain:
            out.append("url_host:" + domain)
    return out


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _shape_tokens(text: MessageText, body_runs: list[str] | None = None) -> list[str]:
    """Structural signals that survive the loss of headers, case and formatting.

    ``body_runs``: ``_RUN.findall(text.body)`` when the caller has it already. The digit, "@"
    and ASCII checks below only skip searches that could not match.
    """
    out: list[str] = []
    subject, body = text.subject, text.body
    digits = _has_digit(body)
    ascii_body = body.isascii()
    letters = [c for c in subject if c.isalpha()]
    if not subject.strip():
        out.append("shape:NO_SUBJECT")
    elif len(letters) >= 5 and _ratio(sum(c.isupper() for c in letters), len(letters)) > 0.7:
        out.append("shape:ALLCAPS_SUBJECT")
    if "!" in subject:
        out.append("shape:EXCLAIM_SUBJECT")
    if _MONEY.search(subject):
        out.append("shape:MONEY_SUBJECT")
    runs = _RUN.findall(body) if body_runs is None else body_runs
    words = [w for w in runs if len(w) > 2 and w.isalpha()]
    out.append("shape:WORDS_" + _bucket(len(words)))
    if len(words) >= 10 and _ratio(sum(map(str.isupper, words)), len(words)) > 0.3:
        out.append("shape:ALLCAPS_BODY")
    if body.count("!") >= 3:
        out.append("shape:EXCLAIM_BODY")
    if "!!" in body or "!!" in subject:
        out.append("shape:EXCLAIM_RUN")
    if digits and _MONEY.search(body):
        out.append("shape:MONEY")
    if digits and _PERCENT.search(body):
        out.append("shape:PERCENT")
    if digits and _PHONE.search(body):
        out.append("shape:PHONE")
    if "@" in body and _EMAIL_ADDRESS.search(body):
        out.append("shape:EMAIL_ADDRESS")
    if ">" in body and len(_QUOTED_LINE.findall(body)) >= 2:
        out.append("shape:QUOTED_REPLY")  # RFC 3676 §4.5 quoting: a conversation
    if (not ascii_body and _CJK.search(body)) or _CJK.search(subject):
        out.append("shape:SCRIPT_CJK")
    if not ascii_body and _CYRILLIC.search(body):
        out.append("shape:SCRIPT_CYRILLIC")
    head = body[:4000]
    if head and not head.isascii() and _ratio(sum(ord(c) > 127 for c in head), len(head)) > 0.2:
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


def text_tokens(text: MessageText) -> list[str]:
    """Tokens of a decoded message, each once, in order of first appearance."""
    found = _run_tokens(text.subject, "subject:")
    # Link targets are read as hosts below; the words of their paths (/click/, /remove/) are
    # a server's naming, not what the message says.
    linkless = _without_links(text.body)
    dated, runs = _runs(linkless)
    found += _tokens_of_runs(dated, runs, "word:", True)
    found += _url_tokens(text.urls)
    # With no link or date blanked out, the body's runs are the ones just found.
    found += _shape_tokens(text, runs if not dated and linkless == text.body else None)
    return list(dict.fromkeys(found))


def message_tokens(raw: bytes | str | Message) -> list[str]:
    """Tokens of a raw message (full RFC 5322, or just a Subject line and a body)."""
    return text_tokens(read_message(raw))
