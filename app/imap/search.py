"""SEARCH criteria (RFC 3501 §6.4.4, RFC 7162 MODSEQ): parsed into a tree, evaluated per message.

Evaluation works on what the session loaded for each candidate: the view (flags, arrival),
the message document (addresses, subject, text body, selected headers, date) and its UID,
sequence number, size and MODSEQ. Dates compare on the day, as the RFC says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from app.domain.imap_flags import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, canonical_flag, flags_of
from app.imap.protocol import Atom, BadCommand, as_number, as_text, in_ranges, parse_sequence_set

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


@dataclass
class Candidate:
    msn: int
    uid: int
    modseq: int
    view: dict[str, Any]
    message: dict[str, Any]
    size: int


Test = Callable[[Candidate], bool]


@dataclass
class Criteria:
    test: Test
    needs_message: bool
    modseq: bool  # a MODSEQ key was used: the answer carries (MODSEQ n)


def parse_date(value: Any) -> date:
    text = as_text(value, "date")
    try:
        day, month, year = text.split("-")
        return date(int(year), MONTHS.index(month.lower()) + 1, int(day))
    except (ValueError, IndexError):
        raise BadCommand(f"invalid date {text!r}") from None


def parse_criteria(args: list[Any], largest_msn: int, largest_uid: int) -> Criteria:
    state = {"message": False, "modseq": False}
    pos = 0

    def take() -> Any:
        nonlocal pos
        if pos >= len(args):
            raise BadCommand("missing search argument")
        pos += 1
        return args[pos - 1]

    def key() -> Test:
        token = take()
        if isinstance(token, list):
            return _all(parse_list(token))
        if not isinstance(token, Atom):
            raise BadCommand("search key expected")
        name = token.upper()
        simple = _FLAG_KEYS.get(name)
        if simple is not None:
            return simple
        if name == "ALL" or name == "OLD":
            return lambda c: True
        if name in ("NEW", "RECENT"):
            return lambda c: False
        if name in ("KEYWORD", "UNKEYWORD"):
            flag = canonical_flag(as_text(take()))
            want = name == "KEYWORD"
            return lambda c: (flag in flags_of(c.view)) == want
        if name in ("FROM", "TO", "CC", "BCC"):
            needle = as_text(take()).lower()
            state["message"] = True
            field = name.lower()
            return lambda c: needle in _addresses_text(c.message.get(field))
        if name == "SUBJECT":
            needle = as_text(take()).lower()
            state["message"] = True
            return lambda c: needle in (c.message.get("subject") or "").lower()
        if name in ("BODY", "TEXT"):
            needle = as_text(take()).lower()
            state["message"] = True
            whole = name == "TEXT"
            return lambda c: _text_contains(c, needle, whole)
        if name == "HEADER":
            field = as_text(take()).lower()
            needle = as_text(take()).lower()
            state["message"] = True
            return lambda c: _header_contains(c, field, needle)
        if name in ("SINCE", "BEFORE", "ON"):
            day = parse_date(take())
            return _date_test(name, day, lambda c: _day(c.view.get("received_at")))
        if name in ("SENTSINCE", "SENTBEFORE", "SENTON"):
            day = parse_date(take())
            state["message"] = True
            return _date_test(name[4:], day, lambda c: _day(c.message.get("date")))
        if name in ("LARGER", "SMALLER"):
            n = as_number(take())
            return (lambda c: c.size > n) if name == "LARGER" else (lambda c: c.size < n)
        if name == "UID":
            ranges = parse_sequence_set(take(), largest_uid)
            return lambda c: in_ranges(c.uid, ranges)
        if name == "NOT":
            inner = key()
            return lambda c: not inner(c)
        if name == "OR":
            a, b = key(), key()
            return lambda c: a(c) or b(c)
        if name == "MODSEQ":
            # MODSEQ [entry-name entry-type] mod-sequence-valzer
            value = take()
            if not (isinstance(value, Atom) and value.isdigit()):
                take()
                value = take()
            n = as_number(value, "MODSEQ")
            state["modseq"] = True
            return lambda c: c.modseq >= n
        if name[0].isdigit() or name[0] == "*":
            ranges = parse_sequence_set(token, largest_msn)
            return lambda c: in_ranges(c.msn, ranges)
        raise BadCommand(f"unknown search key {token}")

    def parse_list(tokens: list[Any]) -> list[Test]:
        nonlocal args, pos
        saved = (args, pos)
        args, pos = tokens, 0
        tests = []
        while pos < len(args):
            tests.append(key())
        args, pos = saved
        if not tests:
            raise BadCommand("empty search list")
        return tests

    tests = []
    while pos < len(args):
        tests.append(key())
    if not tests:
        raise BadCommand("missing search criteria")
    return Criteria(_all(tests), state["message"], state["modseq"])


def _all(tests: list[Test]) -> Test:
    return lambda c: all(t(c) for t in tests)


def _flag_test(field: str, want: bool) -> Test:
    return lambda c: (field in flags_of(c.view)) == want


_FLAG_KEYS: dict[str, Test] = {
    "SEEN": _flag_test(SEEN, True),
    "UNSEEN": _flag_test(SEEN, False),
    "FLAGGED": _flag_test(FLAGGED, True),
    "UNFLAGGED": _flag_test(FLAGGED, False),
    "ANSWERED": _flag_test(ANSWERED, True),
    "UNANSWERED": _flag_test(ANSWERED, False),
    "DELETED": _flag_test(DELETED, True),
    "UNDELETED": _flag_test(DELETED, False),
    "DRAFT": _flag_test(DRAFT, True),
    "UNDRAFT": _flag_test(DRAFT, False),
}


def _addresses_text(value: Any) -> str:
    people = value if isinstance(value, list) else [value] if value else []
    return " ".join(
        f"{p.get('name') or ''} <{p.get('email') or ''}>" for p in people if isinstance(p, dict)
    ).lower()


def _text_contains(c: Candidate, needle: str, whole: bool) -> bool:
    m = c.message
    if needle in (m.get("text_body") or "").lower():
        return True
    if not whole:
        return False
    headers = m.get("headers") or {}
    haystack = " ".join(
        [m.get("subject") or "", _addresses_text(m.get("from")), _addresses_text(m.get("to"))]
        + [f"{k}: {v}" for k, v in headers.items()]
    )
    return needle in haystack.lower()


def _header_contains(c: Candidate, field: str, needle: str) -> bool:
    m = c.message
    if field in ("subject",):
        return needle in (m.get("subject") or "").lower()
    if field in ("from", "to", "cc", "bcc"):
        return needle in _addresses_text(m.get(field))
    for k, v in (m.get("headers") or {}).items():
        if k.lower() == field and needle in str(v).lower():
            return True
    return False


def _day(value: Any) -> date | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.date()


def _date_test(kind: str, day: date, get: Callable[[Candidate], date | None]) -> Test:
    def test(c: Candidate) -> bool:
        d = get(c)
        if d is None:
            return False
        if kind == "SINCE":
            return d >= day
        if kind == "BEFORE":
            return d < day
        return d == day

    return test
