"""``mime_fast.parse_bytes`` gives exactly stock ``BytesParser.parsebytes``'s tree
(docs/overrides.md).

Storage (``parse_message``, ``policy.default``) and the spam model (``read_message``,
``compat32``) both parse with it. Every node of the tree must be stock's: its class, Unix From,
raw header lines, preamble, epilogue, defects, default type, charset and payload, recursively;
on the test messages, benchmark-like mail and thousands of random documents made of awkward
pieces (boundary look-alikes, bare CR and CRLF line ends, delivery-status blocks, nested and
unterminated multiparts, lines longer than a feed chunk, 8-bit bytes), with both policies, whole
and headers only.
"""

from __future__ import annotations

import random
import re
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from app.domain import mime_fast
from app.domain.mime_fast import parse_bytes
from app.domain.parsing import _PARSE_POLICY

DATA = Path(__file__).resolve().parents[1] / "data"
POLICIES = [_PARSE_POLICY, policy.compat32, policy.default, policy.SMTP]


def tree(msg: Message) -> tuple[Any, ...]:
    payload = msg._payload  # type: ignore[attr-defined]
    return (
        type(msg).__name__,
        msg.get_unixfrom(),
        list(msg._headers),  # type: ignore[attr-defined]
        msg.preamble,
        msg.epilogue,
        [(type(d).__name__, str(d)) for d in msg.defects],
        msg.get_default_type(),
        msg._charset,  # type: ignore[attr-defined]
        [tree(part) for part in payload] if isinstance(payload, list) else payload,
    )


def assert_same_tree(raw: bytes) -> None:
    for parse_policy in POLICIES:
        for headersonly in (False, True):
            stock = BytesParser(policy=parse_policy).parsebytes(raw, headersonly)
            fast = parse_bytes(raw, parse_policy, headersonly=headersonly)
            assert tree(fast) == tree(stock), (parse_policy, headersonly, raw[:300])


def test_the_test_messages_parse_to_stocks_tree() -> None:
    files = sorted(DATA.rglob("*.eml"))
    assert len(files) >= 20
    for path in files:
        assert_same_tree(path.read_bytes())


def _attachment_message(rng: random.Random, lines: int, eol: str) -> bytes:
    body = "".join(
        "".join(rng.choice("ABCDEFGHabcdefgh0123456789+/") for _ in range(76)) + eol
        for _ in range(lines)
    )
    return (
        f'Content-Type: multipart/mixed; boundary="=_b"{eol}Subject: big{eol}{eol}'
        f"preamble{eol}--=_b{eol}Content-Type: text/plain{eol}{eol}see attached{eol}"
        f"--=_b{eol}Content-Type: application/octet-stream{eol}"
        f"Content-Transfer-Encoding: base64{eol}{eol}{body}--=_b--{eol}epilogue{eol}"
    ).encode()


def test_long_parts_as_the_benchmark_sends_them() -> None:
    rng = random.Random(3)
    for eol in ("\r\n", "\n", "\r"):
        for lines in (0, 1, 107, 108, 109, 3000):  # 108 lines of 78 characters ≈ one feed chunk
            assert_same_tree(_attachment_message(rng, lines, eol))


_BOUNDARIES = ["b", "=_b", "a.b+c(1)", "--", "x y", "b?"]


def _line(rng: random.Random, boundaries: list[str]) -> str:
    boundary = rng.choice(boundaries)
    return rng.choice(
        [
            "plain words",
            "",
            " ",
            "-",
            "--",
            f"--{boundary}",
            f"--{boundary}--",
            f"--{boundary}  \t",
            f"--{boundary}x",
            f"--{boundary}--x",
            f"-- {boundary}",
            f"--{boundary.upper()}",
            "\r",
            "From someone",
            "Header: value",
            " continued",
            "é 8-bit \xff",
            "x" * rng.choice([10, 8190, 8191, 8192, 8193, 20000]),
        ]
    )


def _headers(rng: random.Random, boundary: str, eol: str) -> str:
    kind = rng.choice(
        [
            f'multipart/mixed; boundary="{boundary}"',
            f"multipart/alternative; boundary={boundary}",
            f'multipart/digest; boundary="{boundary}"',
            "multipart/mixed",  # no boundary
            "message/rfc822",
            "message/delivery-status",
            "text/plain; charset=utf-8",
            "text/html",
            None,
        ]
    )
    lines = [f"Content-Type: {kind}"] if kind else []
    if rng.random() < 0.3:
        lines.append("Content-Transfer-Encoding: " + rng.choice(["7bit", "base64", "quoted"]))
    if rng.random() < 0.2:
        lines.insert(0, "From sender@example.test Mon Jan  1 00:00:00 2024")
    if rng.random() < 0.2:
        lines.append(" folded continuation")
    return "".join(line + eol for line in lines)


def _document(rng: random.Random, depth: int, boundaries: list[str]) -> str:
    eol = rng.choice(["\n", "\r\n", "\r", "\r\n", "\n"])
    boundary = rng.choice(_BOUNDARIES)
    inner = [*boundaries, boundary]
    out = [_headers(rng, boundary, eol), rng.choice([eol, "", eol, eol])]
    for _ in range(rng.randrange(8)):
        roll = rng.random()
        if roll < 0.45 or depth >= 3:
            out.append(_line(rng, inner) + rng.choice([eol, eol, "\r\n", "\n", "\r"]))
        elif roll < 0.75:
            out.append(f"--{boundary}{eol}")
            out.append(_document(rng, depth + 1, inner))
        elif roll < 0.85:
            out.append(f"--{boundary}--{eol}")
        else:
            out.append(eol)
    if rng.random() < 0.5:
        out.append(f"--{boundary}--" + rng.choice(["", eol, "  " + eol]))
    return "".join(out)


def test_random_documents_of_awkward_pieces() -> None:
    rng = random.Random(11)
    for _ in range(1500):
        text = _document(rng, 0, [])
        if rng.random() < 0.3:  # move every line across the feed chunks' edges
            text = "X-Pad: " + "p" * rng.randrange(8192) + "\r\n" + text
        assert_same_tree(text.encode("utf-8", "surrogateescape"))


def test_edges_of_the_input() -> None:
    for raw in (
        b"",
        b"\n",
        b"\r\n\r\n",
        b"Subject: x",
        b"Subject: x\r",
        b"Subject: x\r\n\r\nbody without end",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--b--",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\r",
        b"Content-Type: message/delivery-status\n\nA: 1\n\nB: 2\n\r\n\n",
        b"x" * 8191 + b"\r\n" + b"y" * 8192 + b"\r\n",
    ):
        assert_same_tree(raw)


def test_a_line_is_shown_to_the_end_predicates_only_when_it_could_match() -> None:
    """A boundary predicate can match only a line starting with ``--``: other lines are not
    shown to it; a predicate of an unknown kind is asked about every line."""
    lines = mime_fast._Lines()
    boundary = re.compile("(?P<sep>" + re.escape("--b") + r")(?P<end>--)?(?P<ws>[ \t]*)$")
    asked: list[str] = []

    def known(line: str) -> Any:
        asked.append(line)
        return boundary.match(line)

    lines.push_eof_matcher(boundary.match)
    lines.push("a\n" * 500 + "-x\n--b\nafter\n")
    lines.close()
    assert list(lines) == ["a\n"] * 500 + ["-x\n"]
    assert lines.readline() == ""  # still at the false end of the part
    lines.pop_eof_matcher()
    assert lines.readline() == "--b\n"

    unknown = mime_fast._Lines()
    unknown.push_eof_matcher(known)
    unknown.push("a\nb\n--b\n")
    unknown.close()
    assert list(unknown) == ["a\n", "b\n"]
    assert asked == ["a\n", "b\n", "--b\n"]


@pytest.mark.parametrize("active", [True, False] if mime_fast.ACTIVE else [False])
def test_the_fast_parser_runs_only_when_active(
    active: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mime_fast, "ACTIVE", active)
    made: list[object] = []
    real = mime_fast._FastFeedParser

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, parse_policy: Any) -> None:
            made.append(self)
            super().__init__(parse_policy)

    monkeypatch.setattr(mime_fast, "_FastFeedParser", Counting)
    raw = _attachment_message(random.Random(1), 200, "\r\n")
    assert tree(parse_bytes(raw, _PARSE_POLICY)) == tree(
        BytesParser(policy=_PARSE_POLICY).parsebytes(raw)
    )
    assert len(made) == (1 if active else 0)
