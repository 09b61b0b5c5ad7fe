"""IMAP4rev1 wire syntax (RFC 3501 §9, RFC 7888 LITERAL+): reading commands, writing responses.

Nothing here knows about mailboxes. ``read_command`` assembles one command from lines and
literals (answering ``+`` to synchronizing literals, refusing oversized ones before the client
sends them), ``tokenize`` turns it into atoms, strings, literals and nested lists, and the
helpers at the end quote values for responses. Malformed input raises ``BadCommand``, which the
session answers with a tagged (or untagged) BAD; the connection keeps serving.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

MAX_LINE = 64 * 1024  # one line of a command (literals aside)
MAX_LITERALS = 64  # per command
_LITERAL = re.compile(rb"\{(\d{1,12})(\+?)\}\r?\n$")
# atom-specials (RFC 3501 §9) minus "\\" (flags such as \\Seen are atoms with a leading one)
_ATOM_SPECIALS = set(b'(){ "]') | set(range(0, 32)) | {127}


class BadCommand(Exception):
    """Syntax the server cannot parse; answered with BAD."""

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag


class TooBig(BadCommand):
    """A literal above the limit (RFC 7889 [TOOBIG]); its bytes were not stored."""


class Disconnect(Exception):
    """The client went away (EOF) in the middle of a command."""


class Atom(str):
    """An unquoted token (so NIL and "NIL" stay distinguishable)."""


@dataclass
class Command:
    tag: str
    name: str
    args: list[Any]


async def read_command(
    reader: asyncio.StreamReader,
    send_continuation: Callable[[], Awaitable[None]],
    max_literal: int,
) -> list[bytes]:
    """The parts of one command: text, literal, text, ... (literals as raw bytes).

    A synchronizing literal above ``max_literal`` is refused before the client sends it; a
    non-synchronizing one (LITERAL+) is read and dropped. Either way ``TooBig`` is raised
    after the rest of the command's line is consumed, so the stream stays in step.
    """
    parts: list[bytes] = []
    too_big = False
    while True:
        line = await _read_line(reader)
        match = _LITERAL.search(line)
        if not match:
            parts.append(line.rstrip(b"\r\n"))
            if too_big:
                raise TooBig("literal too big", _tag_of(parts))
            return parts
        size, plus = int(match.group(1)), bool(match.group(2))
        parts.append(line[: match.start()])
        if len(parts) > MAX_LITERALS * 2:
            raise BadCommand("too many literals", _tag_of(parts))
        if size > max_literal or too_big:
            too_big = True
            if not plus:
                # RFC 3501 §7.5: the client waits for "+"; a tagged answer tells it not to send
                raise TooBig("literal too big", _tag_of(parts))
            await _discard(reader, size)
            parts.append(b"")
            continue
        if not plus:
            await send_continuation()
        try:
            parts.append(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            raise Disconnect from None


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise BadCommand("incomplete command") from None
        raise Disconnect from None
    except asyncio.LimitOverrunError as e:
        # drop the rest of the oversized line so the next command starts clean; the answer
        # carries the tag when the line began with one
        try:
            head = await reader.readexactly(e.consumed)
            while True:
                try:
                    await reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    await reader.readexactly(more.consumed)
        except asyncio.IncompleteReadError:
            raise Disconnect from None
        raise BadCommand("line too long", _tag_of([head])) from None
    return line


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(size, 1 << 16))
        if not chunk:
            raise Disconnect
        size -= len(chunk)


def _tag_of(parts: list[bytes]) -> str | None:
    head = parts[0].split(b" ", 1)[0] if parts else b""
    try:
        tag = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    return tag if tag and valid_tag(tag) else None


def valid_tag(tag: str) -> bool:
    return all(33 <= ord(c) < 127 and c not in '(){%*"\\+' for c in tag)


def parse_command(parts: list[bytes]) -> Command:
    try:
        tokens = tokenize(parts)
    except BadCommand as e:
        e.tag = e.tag or _tag_of(parts)
        raise
    if not tokens or not isinstance(tokens[0], Atom) or not valid_tag(tokens[0]):
        raise BadCommand("missing or invalid tag")
    tag = str(tokens[0])
    if len(tokens) < 2 or not isinstance(tokens[1], Atom):
        raise BadCommand("missing command", tag)
    return Command(tag, tokens[1].upper(), tokens[2:])


def tokenize(parts: list[bytes]) -> list[Any]:
    """Atoms, quoted strings (str), literals (bytes) and parenthesised lists (list)."""
    stack: list[list[Any]] = [[]]
    for index, part in enumerate(parts):
        if index % 2:  # a literal
            stack[-1].append(part)
            continue
        _tokenize_text(part, stack)
    if len(stack) != 1:
        raise BadCommand("unbalanced parentheses", _tag_of(parts))
    return stack[0]


def _tokenize_text(text: bytes, stack: list[list[Any]]) -> None:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == 0x20:
            i += 1
        elif c == 0x28:  # (
            new: list[Any] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise BadCommand("unbalanced parentheses")
            stack.pop()
            i += 1
        elif c == 0x22:  # "
            i, value = _quoted(text, i + 1)
            stack[-1].append(value)
        else:
            start = i
            depth = 0
            while i < n:
                c = text[i]
                if c == 0x5B:  # [ : a section; spaces and parens inside belong to the atom
                    depth += 1
                elif c == 0x5D and depth:
                    depth -= 1
                elif depth == 0 and c in _ATOM_SPECIALS:
                    break
                elif depth == 0 and c < 32:
                    raise BadCommand("control character in command")
                i += 1
            if depth:
                raise BadCommand("unbalanced brackets")
            try:
                stack[-1].append(Atom(text[start:i].decode("utf-8")))
            except UnicodeDecodeError:
                raise BadCommand("invalid UTF-8 in command") from None
            if i == start:
                raise BadCommand(f"unexpected character {chr(text[i])!r}")


def _quoted(text: bytes, i: int) -> tuple[int, str]:
    out = bytearray()
    while i < len(text):
        c = text[i]
        if c == 0x5C:  # backslash
            if i + 1 >= len(text) or text[i + 1] not in (0x22, 0x5C):
                raise BadCommand("bad escape in quoted string")
            out.append(text[i + 1])
            i += 2
        elif c == 0x22:
            try:
                return i + 1, out.decode("utf-8")
            except UnicodeDecodeError:
                raise BadCommand("invalid UTF-8 in quoted string") from None
        elif c in (0x0D, 0x0A, 0):
            raise BadCommand("line break in quoted string")
        else:
            out.append(c)
            i += 1
    raise BadCommand("unterminated quoted string")


# --- argument helpers ------------------------------------------------------------------------


def as_text(value: Any, what: str = "argument") -> str:
    """An astring: atom, quoted string or literal."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCommand(f"{what} is not UTF-8") from None
    if isinstance(value, str):
        return str(value)
    raise BadCommand(f"expected a string for {what}")


def as_number(value: Any, what: str = "number") -> int:
    if isinstance(value, Atom) and value.isdigit() and len(value) <= 20:
        return int(value)
    raise BadCommand(f"expected a number for {what}")


def parse_sequence_set(text: Any, largest: int) -> list[tuple[int, int]]:
    """RFC 3501 sequence-set → inclusive ranges; ``*`` is ``largest`` (0 when empty)."""
    if not isinstance(text, Atom) or not text:
        raise BadCommand("invalid sequence set")
    ranges = []
    for piece in text.split(","):
        bounds = piece.split(":")
        if len(bounds) > 2 or not all(bounds):
            raise BadCommand(f"invalid sequence set {text}")
        numbers = []
        for b in bounds:
            if b == "*":
                numbers.append(largest)
            elif b.isdigit() and len(b) <= 10 and 0 < int(b) <= 0xFFFFFFFF:
                numbers.append(int(b))
            else:
                raise BadCommand(f"invalid sequence set {text}")
        lo, hi = min(numbers), max(numbers)
        ranges.append((lo, hi))
    return ranges


def in_ranges(value: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def compact_ranges(values: list[int]) -> str:
    """[1,2,3,7] → "1:3,7" (UIDPLUS and ESEARCH-style sets)."""
    out = []
    values = sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}:{values[j]}")
        i = j + 1
    return ",".join(out)


# --- response values -------------------------------------------------------------------------


def quote(value: str | bytes | None) -> bytes:
    """NIL, a quoted string, or a literal when the value has line breaks, quotes-unsafe or
    8-bit bytes."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) < 1024 and all(32 <= b < 127 for b in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def plist(values: list[bytes]) -> bytes:
    return b"(" + b" ".join(values) + b")"
