"""Reading the SMTP DATA stream in chunks (RFC 5321 §4.5.2), with aiosmtpd's limits and outcomes.

aiosmtpd reads DATA one line at a time — an await, a debug log call and a bytearray per line,
about 13,000 of each for a 1 MB attachment. ``read_data`` reads up to each ``".\\r\\n"`` (or a
buffer-full when there is none), keeps the chunks until the end marker (a lone dot at the start
of a line), and does the rest with bytes methods over the whole message: undo dot-stuffing and
check line lengths.

The outcome is aiosmtpd's, line for line. A line is what ends in CRLF (a bare LF does not end
one), counted with its CRLF; the size is the sum of the lines before the end marker. aiosmtpd
checks each line in turn and the first problem decides:

- a line whose text (without CRLF) exceeds the line limit is "too long" before its bytes count
  (the stream reader refuses it);
- otherwise the line's bytes count, and once the total exceeds the size limit it is "too much";
- then a line over the limit only by its CRLF is "too long" too.

So: "too long" when a line before the one that crosses the size limit is over the line limit, or
that crossing line's text is; "too much" when the crossing line comes first; fine otherwise. The
data is kept while that can still change, at most the size limit plus one line, as aiosmtpd
keeps it; after that it is read and dropped until the end marker.
"""

from __future__ import annotations

import asyncio
import enum

END = b".\r\n"  # a lone dot on a line ends DATA; the CRLF before it ends the last line
CRLF = b"\r\n"


class DataOutcome(enum.Enum):
    OK = "ok"
    TOO_LONG = "too long"  # a line over the line limit: 500
    TOO_MUCH = "too much"  # over the size limit: 552


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int
) -> tuple[DataOutcome, bytes]:
    """Read DATA up to the end marker; the message (dot-stuffing undone) when the outcome is OK.

    ``reader``'s own limit must be ``line_limit`` (aiosmtpd's reader is made that way): a chunk
    without ``".\\r\\n"`` then never grows past it.
    """
    chunks: list[bytes] = []
    held = 0
    tail = CRLF  # the two bytes before the next chunk: the data starts at the start of a line
    check = _SizeCheck(size_limit, line_limit) if size_limit else None
    outcome: DataOutcome | None = None  # decided before the end only by the size limit
    while True:
        try:
            chunk = await reader.readuntil(END)
        except asyncio.LimitOverrunError as e:
            # No end marker in the buffer's first e.consumed bytes (the rest stays buffered).
            chunk = await reader.read(e.consumed)
            last = False
        else:
            last = _at_line_start(tail, chunk)
            if last:
                chunk = chunk[: -len(END)]
        if outcome is None:
            chunks.append(chunk)
            held += len(chunk)
            if check is not None and (held > check.size_limit or check.pending):
                data = b"".join(chunks)
                outcome, kept = check.over(data)
                chunks, held = ([kept], len(kept)) if outcome is None else ([], 0)
        if last:
            break
        tail = (tail + chunk[-2:])[-2:]
    if outcome is not None:
        return outcome, b""
    data = b"".join(chunks)
    if _has_long_line(data, line_limit):
        return DataOutcome.TOO_LONG, b""
    # RFC 5321 §4.5.2: a line that starts with "." had one more prepended by the sender.
    if data.startswith(b"."):
        data = data[1:]
    return DataOutcome.OK, data.replace(b"\r\n.", CRLF)


def _at_line_start(tail: bytes, chunk: bytes) -> bool:
    """Whether the ``".\\r\\n"`` that ``chunk`` ends with starts a line (the end marker)."""
    before = chunk[-len(END) - 2 : -len(END)]
    if len(before) < 2:
        before = (tail + chunk[: -len(END)])[-2:]
    return before == CRLF


def _has_long_line(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` (whole lines) is longer than ``limit`` with its CRLF.

    Each step looks at the next ``limit`` bytes: with no CRLF among them, the line that starts
    there is too long; else every line up to the last CRLF among them fits.
    """
    start, end = 0, len(data)
    while end - start > limit:
        last = data.rfind(CRLF, start, start + limit)
        if last < 0:
            return True
        start = last + len(CRLF)
    return False


class _SizeCheck:
    """Decides "too long" or "too much" once the data has passed the size limit."""

    def __init__(self, size_limit: int, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.pending = False  # the crossing line is still arriving (only it is kept)

    def over(self, data: bytes) -> tuple[DataOutcome | None, bytes]:
        """The outcome, or None and the bytes to keep while the crossing line still arrives."""
        if not self.pending:
            # The line holding byte number size_limit + 1 starts after the last CRLF before it.
            end = data.rfind(CRLF, 0, self.size_limit)
            start = end + len(CRLF) if end >= 0 else 0
            if _has_long_line(data[:start], self.line_limit):
                return DataOutcome.TOO_LONG, b""
            data = data[start:]
        # ``data`` now starts with the crossing line.
        text_end = data.find(CRLF)
        if text_end < 0:
            if len(data) - 1 > self.line_limit:  # its text is longer than the limit already
                return DataOutcome.TOO_LONG, b""
            self.pending = True
            return None, data
        return (DataOutcome.TOO_LONG if text_end > self.line_limit else DataOutcome.TOO_MUCH), b""
