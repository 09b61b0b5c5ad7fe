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
import string
from email.message import Message
from itertools import compress, count
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
# ASCII text: every ASCII character that is not a letter or a digit becomes a space, so that
# ``text.translate(_ASCII_GAPS).split()`` is ``_RUN.findall(text)`` (see ``_ascii_runs``).
_ASCII_GAPS = str.maketrans({c: " " for c in range(128) if not chr(c).isalnum()})
_DROP_ASCII_UPPER = str.maketrans("", "", string.ascii_uppercase)
# A link whose host urlsplit would read as exactly the characters between "//" and the first
# "/", "?", "#" or the end (see ``_url_host``).
_PLAIN_URL = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9._-]+)(?:[/?#]|\Z)")
_PLAIN_BARE_URL = re.compile(r"([A-Za-z0-9._-]+)(?:[/?#]|\Z)")


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


def _blank_dates(text: str) -> tuple[bool, str]:
    """Whether a date shape was seen, and ``text`` with dates blanked out."""
    if _may_hold_date(text) and _DATE.search(text):
        return True, _DATE.sub(" ", text)
    return False, text


def _runs(text: str) -> tuple[bool, list[str]]:
    """Whether a date shape was seen, and the word runs of ``text`` with dates blanked out."""
    dated, blanked = _blank_dates(text)
    return dated, _RUN.findall(blanked)


def _ascii_runs(text: str) -> list[str]:
    """``_RUN.findall(text)`` for ASCII ``text``, without a regex step per character.

    Exact: for an ASCII character ``[^\\W_]`` (``\\w`` of a str pattern) is ``[A-Za-z0-9]``, so
    the runs are the maximal runs of ASCII letters and digits, which is what ``split()`` gives
    once every other character is a space. ``translate`` keeps ASCII text on CPython's fast
    ASCII-to-ASCII path.
    """
    return text.translate(_ASCII_GAPS).split()


def _ascii_body_tokens(
    dated: bool, lowered: list[str], lengths: list[int], digits: bool, prefix: str
) -> dict[str, None]:
    """``dict.fromkeys(_tokens_of_runs(dated, runs, prefix, True))`` for the runs of ASCII text
    (``_ascii_runs``), given as ``lowered`` (each run's ``str.lower()``) and their ``lengths``;
    ``digits``: whether the text has a digit (when it has none, every run is letters only).

    Why each step gives the same tokens in the same order of first appearance:

    * For an ASCII run ``casefold()`` is ``lower()``, and ``isalpha``, ``isdigit`` and ``len``
      are the same for a run and its lower case.
    * A run of letters of at most ``_MAX_WORD`` (a word) gives ``pair:<previous word>_<word>``
      (not for the first word) and then ``prefix + word``; ``previous`` is only ever set by a
      word and never reset, so the pairs join consecutive words of the list of words alone,
      whatever runs lie between them. Every other run (an "odd" run) gives exactly one token,
      one of ``shape:LONG_TOKEN``, ``shape:ALNUM`` or a ``num:`` shape. So the sequence is the
      words' tokens ``word0, pair01, word1, pair12, word2, ...`` (built below in one string
      join and split, as words hold no spaces) with each odd run's token inserted after the
      tokens of the words before it. Only an odd token's first appearance can matter to the
      order of first appearance, so only the first run of each odd token is inserted.
    * The join also gives ``prefix + word`` for words of one letter, which ``_tokens_of_runs``
      skips; no other run gives ``prefix`` and one lower-case ASCII letter, so those tokens are
      exactly the ones to drop after the dedupe.
    """
    words = lowered
    odd: dict[str, int] = {}  # the token of an odd run -> words before its first run
    is_long = max(lengths, default=0) > _MAX_WORD
    if digits or is_long:
        flags = list(map(str.isalpha, lowered)) if digits else [True] * len(lowered)
        if is_long:
            flags = list(map(bool.__and__, flags, map(_MAX_WORD.__ge__, lengths)))
        odd_runs = list(compress(count(), map(False.__eq__, flags)))
        if odd_runs:
            words = []
            start = 0
            for n_odd, index in enumerate(odd_runs):
                run = lowered[index]
                if run.isdigit():
                    token = _number_shape(run)
                elif len(run) > _MAX_WORD:
                    token = "shape:LONG_TOKEN"
                else:
                    token = "shape:ALNUM"
                odd.setdefault(token, index - n_odd)
                words += lowered[start:index]
                start = index + 1
            words += lowered[start:]
    n = len(words)
    if n:
        parts = [" pair:"] * (6 * n - 4)  # " word:", w_i, " pair:", w_i, "_", w_i+1; ...
        parts[0::6] = [" " + prefix] * n
        parts[1::6] = words
        parts[3::6] = words[:-1]
        parts[4::6] = ["_"] * (n - 1)
        parts[5::6] = words[1:]
        tokens = "".join(parts)[1:].split(" ")
    else:
        tokens = []
    for token, n_words in reversed(odd.items()):
        tokens.insert(2 * n_words - 1 if n_words else 0, token)
    if dated:
        tokens.insert(0, "shape:DATE")
    found = dict.fromkeys(tokens)
    for letter in string.ascii_lowercase:
        found.pop(prefix + letter, None)
    return found


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


def _url_host(url: str) -> str | None:
    """``urlsplit(url if "://" in url else "http://" + url).hostname``, or None for a URL that
    cannot give a host (a "mailto:", "cid:" or "#" link, or one urlsplit rejects).

    Most links are ``http(s)://`` plus a plain host name; for those the host is read with one
    regex match. It is exactly urlsplit's: the scheme is all scheme characters, so "//" starts
    the netloc, which ends at the first "/", "?" or "#"; a netloc of only letters, digits, ".",
    "_" and "-" has no userinfo, port, brackets or zone, so the host is the netloc in lower case
    and urlsplit has nothing to reject; the stripping urlsplit does (leading blanks and control
    characters, tabs and line breaks anywhere) cannot touch a URL that starts with a letter and
    whose netloc is followed by "/", "?", "#" or the end. A URL that starts so cannot start with
    "mailto:", "cid:" or "#" either. Any other URL takes the general path.
    """
    match = _PLAIN_URL.match(url) if "://" in url else _PLAIN_BARE_URL.match(url)
    if match is not None:
        return match[1].lower()
    if url.casefold().startswith(("mailto:", "cid:", "#")):
        return None
    try:
        return urlsplit(url if "://" in url else "http://" + url).hostname
    except ValueError:
        return None


def _url_tokens(urls: tuple[str, ...]) -> list[str]:
    """Tokens of the link targets. A newsletter links to a few hosts many times, so each host's
    token (a pure function of the host) is worked out once per call."""
    out = ["shape:URLS_" + _bucket(len(urls))]
    of_host: dict[str, str | None] = {}
    token: str | None
    for url in urls:
        host = _url_host(url)
        if not host:
            continue
        if host in of_host:
            token = of_host[host]
        else:
            if _IPV4.match(host):
                token = "shape:URL_IP"  # hosts without a name: throwaway servers
            else:
                domain = registrable_domain(host)
                token = "url_host:" + domain if "." in domain else None
            of_host[host] = token
        if token is not None:
            out.append(token)
    return out


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _words_of_body(
    body: str, runs: list[str] | None, lengths: list[int] | None = None
) -> tuple[int, bool]:
    """``len(words)`` and whether ``len(words) >= 10`` and more than 30% of ``words`` are upper
    case, for ``words`` the runs of ``body`` made of letters only and longer than 2.

    ``runs``: ``_RUN.findall(body)`` if the caller has it; for an ASCII body the runs may be in
    lower case (only their lengths and letters-only-ness are read from them), and ``lengths``
    their lengths if the caller has them. In an ASCII body a run is upper case only if it holds
    an upper-case letter, and no letter is in two runs, so the body's count of upper-case
    letters bounds the count of upper-case words: when that bound is no more than 30% of the
    words, the words need not be looked at again.
    """
    if runs is None:
        runs = _ascii_runs(body) if body.isascii() else _RUN.findall(body)
    if not body.isascii():
        words = [w for w in runs if len(w) > 2 and w.isalpha()]
        n_upper = sum(map(str.isupper, words))
        return len(words), len(words) >= 10 and _ratio(n_upper, len(words)) > 0.3
    if _has_digit(body):
        n_words = sum(1 for w in runs if len(w) > 2 and w.isalpha())
    else:  # every run is letters only
        if lengths is None:
            lengths = list(map(len, runs))
        n_words = len(lengths) - lengths.count(1) - lengths.count(2)
    if n_words < 10:
        return n_words, False
    upper_bound = len(body) - len(body.translate(_DROP_ASCII_UPPER))
    if _ratio(upper_bound, n_words) <= 0.3:
        return n_words, False
    words = [w for w in _ascii_runs(body) if len(w) > 2 and w.isalpha()]
    return n_words, _ratio(sum(map(str.isupper, words)), len(words)) > 0.3


def _shape_tokens(
    text: MessageText, body_runs: list[str] | None = None, run_lengths: list[int] | None = None
) -> list[str]:
    """Structural signals that survive the loss of headers, case and formatting.

    ``body_runs``: ``_RUN.findall(text.body)`` when the caller has it already (for an ASCII
    body, in lower case will do). The digit, "@" and ASCII checks below only skip searches that
    could not match. ``run_lengths``: the lengths of ``body_runs``, if the caller has them.
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
    n_words, allcaps = _words_of_body(body, body_runs, run_lengths)
    out.append("shape:WORDS_" + _bucket(n_words))
    if allcaps:
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
        if text.images and n_words < 50:
            out.append("shape:IMAGES_LITTLE_TEXT")
    if text.images:
        out.append("shape:IMAGES")
    for ctype in sorted(set(text.attachments)):
        out.append("shape:ATTACHMENT_" + ctype.split("/")[0].upper())
    return out


def text_tokens(text: MessageText) -> list[str]:
    """Tokens of a decoded message, each once, in order of first appearance.

    That is ``list(dict.fromkeys(subject + body + links + shapes))`` (the token lists of the
    four parts), built part by part: with ``head`` and ``body`` each without repeats, the tokens
    of ``body`` not in ``head`` follow ``head`` in their own order, and the links' and shapes'
    tokens that are in neither follow those.
    """
    head = dict.fromkeys(_run_tokens(text.subject, "subject:"))
    # Link targets are read as hosts below; the words of their paths (/click/, /remove/) are
    # a server's naming, not what the message says.
    linkless = _without_links(text.body)
    dated, blanked = _blank_dates(linkless)
    runs: list[str]
    lengths: list[int] | None = None
    if blanked.isascii():
        runs = _ascii_runs(blanked.lower())
        lengths = list(map(len, runs))
        body = _ascii_body_tokens(dated, runs, lengths, _has_digit(blanked), "word:")
    else:
        runs = _RUN.findall(blanked)
        body = dict.fromkeys(_tokens_of_runs(dated, runs, "word:", True))
    for token in head:
        body.pop(token, None)
    # With no link or date blanked out, the body's runs are the ones just found.
    same = not dated and linkless == text.body
    shapes = _shape_tokens(text, runs if same else None, lengths if same else None)
    tail = dict.fromkeys(_url_tokens(text.urls) + shapes)
    return [*head, *body, *(t for t in tail if t not in head and t not in body)]


def message_tokens(raw: bytes | str | Message) -> list[str]:
    """Tokens of a raw message (full RFC 5322, or just a Subject line and a body)."""
    return text_tokens(read_message(raw))
