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


def _run_tokens(text: str, prefix: str, pairs: bool = False) -> list[str]:
    """Words (case-folded), number and date shapes of a text, in order; with ``pairs``, also
    each two adjacent words (``pair:click_here``): phrases carry what single words do not."""
    out: list[str] = []
    if _DATE.search(text):
        out.append("shape:DATE")
        text = _DATE.sub(" ", text)
    previous = ""
    for run in _RUN.findall(text):
        if pairs and run.isalpha() and len(run) <= _MAX_WORD:
            word = run.casefold()
            if previous:
                out.append(f"pair:{previous}_{word}")
            previous = word
        if run.isdigit():
            out.append(_number_shape(run))
        elif len(run) > _MAX_WORD:
            out.append("shape:LONG_TOKEN")
        elif run.isalpha():
            if len(run) > 1:
                out.append(prefix + run.casefold())
        else:  # letters and digits mixed: ids, codes, obfuscation (v1agra)
            out.append("shape:ALNUM")
    return out


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


def _shape_tokens(text: MessageText) -> list[str]:
    """Structural signals that survive the loss of headers, case and formatting."""
    out: list[str] = []
    subject, body = text.subject, text.body
    letters = [c for c in subject if c.isalpha()]
    if not subject.strip():
        out.append("shape:NO_SUBJECT")
    elif len(letters) >= 5 and _ratio(sum(c.isupper() for c in letters), len(letters)) > 0.7:
        out.append("shape:ALLCAPS_SUBJECT")
    if "!" in subject:
        out.append("shape:EXCLAIM_SUBJECT")
    if _MONEY.search(subject):
        out.append("shape:MONEY_SUBJECT")
    words = [w for w in _RUN.findall(body) if w.isalpha() and len(w) > 2]
    out.append("shape:WORDS_" + _bucket(len(words)))
    if len(words) >= 10 and _ratio(sum(w.isupper() for w in words), len(words)) > 0.3:
        out.append("shape:ALLCAPS_BODY")
    if body.count("!") >= 3:
        out.append("shape:EXCLAIM_BODY")
    if "!!" in body or "!!" in subject:
        out.append("shape:EXCLAIM_RUN")
    if _MONEY.search(body):
        out.append("shape:MONEY")
    if _PERCENT.search(body):
        out.append("shape:PERCENT")
    if _PHONE.search(body):
        out.append("shape:PHONE")
    if _EMAIL_ADDRESS.search(body):
        out.append("shape:EMAIL_ADDRESS")
    if len(_QUOTED_LINE.findall(body)) >= 2:
        out.append("shape:QUOTED_REPLY")  # RFC 3676 §4.5 quoting: a conversation
    if _CJK.search(body) or _CJK.search(subject):
        out.append("shape:SCRIPT_CJK")
    if _CYRILLIC.search(body):
        out.append("shape:SCRIPT_CYRILLIC")
    if body and _ratio(sum(ord(c) > 127 for c in body[:4000]), len(body[:4000])) > 0.2:
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
    found += _run_tokens(_LINKISH.sub(" ", text.body), "word:", pairs=True)
    found += _url_tokens(text.urls)
    found += _shape_tokens(text)
    return list(dict.fromkeys(found))


def message_tokens(raw: bytes | str | Message) -> list[str]:
    """Tokens of a raw message (full RFC 5322, or just a Subject line and a body)."""
    return text_tokens(read_message(raw))
