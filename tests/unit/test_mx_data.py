"""The chunked DATA reader against aiosmtpd's line-by-line loop, on the same byte streams."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.mx.data import DataOutcome, read_data

AFTER = b"QUIT\r\n"  # a pipelined command after the end marker must stay unread


async def _aiosmtpd_loop(
    reader: asyncio.StreamReader, size_limit: int, line_limit: int
) -> tuple[DataOutcome, bytes]:
    """aiosmtpd 1.4's ``smtp_DATA`` reading loop (reply aside), as the reference."""
    data: list[bytearray] = []
    num_bytes = 0
    fragments: list[bytes] = []
    state = DataOutcome.OK
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as e:
            if state == DataOutcome.OK:
                state = DataOutcome.TOO_LONG
            data *= 0
            line = await reader.read(e.consumed)
        if not fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state == DataOutcome.OK and size_limit and num_bytes > size_limit:
            state = DataOutcome.TOO_MUCH
            data *= 0
        fragments.append(line)
        if line.endswith(b"\r\n"):
            if state == DataOutcome.OK:
                whole = b"".join(fragments)
                if len(whole) > line_limit:
                    state = DataOutcome.TOO_LONG
                    data *= 0
                else:
                    data.append(bytearray(whole))
            fragments *= 0
    if state != DataOutcome.OK:
        return state, b""
    for text in data:
        if text.startswith(b"."):
            del text[0]
    return state, b"".join(data)


async def _ours(
    reader: asyncio.StreamReader, size_limit: int, line_limit: int
) -> tuple[DataOutcome, bytes]:
    return await read_data(reader, size_limit=size_limit, line_limit=line_limit)


async def _run(reader_fn, stream: bytes, size_limit: int, line_limit: int, rng: random.Random):  # type: ignore[no-untyped-def]
    reader = asyncio.StreamReader(limit=line_limit)

    # Small pieces make the reader wait mid-line (and overrun its limit); large ones give it
    # many lines at once.
    sizes = [1, 7, 50, 400] if rng.random() < 0.5 else [1, 2, 3, 7, 50, 400, 5000, 70000]

    async def feed() -> None:
        pos = 0
        while pos < len(stream):
            step = rng.choice(sizes)
            reader.feed_data(stream[pos : pos + step])
            pos += step
            await asyncio.sleep(0)

    feeder = asyncio.create_task(feed())
    result = await reader_fn(reader, size_limit, line_limit)
    await feeder
    reader.feed_eof()
    return result, await reader.read()


def _stream(rng: random.Random, line_limit: int) -> bytes:
    pieces = [b"Subject: x\r\n"] if rng.random() < 0.5 else []
    for _ in range(rng.randint(0, 60)):
        kind = rng.random()
        if kind < 0.5:
            n = rng.choice(
                [0, 1, 5, 70, line_limit - 3, line_limit - 2, line_limit - 1, line_limit]
            )
            n = max(0, n + rng.choice([0, 0, 0, 1, 2, 3, 200]))
            body = bytes(rng.choice(b"ab.\r\n \t") for _ in range(min(n, 20))) + b"x" * max(
                0, n - 20
            )
            line = body.replace(b"\r\n", b"\n\r")
            pieces.append(line + b"\r\n")
        elif kind < 0.7:
            pieces.append(rng.choice([b"..\r\n", b"..x\r\n", b".a.\r\n", b"end.\r\n"]))
        elif kind < 0.8:
            pieces.append(rng.choice([b"\r\n", b"\r\r\n", b"\n\r\n", b".\n\r\n", b"a\r.\r\n"]))
        else:
            pieces.append(b"word. " * rng.randint(1, 40) + b"\r\n")
    return b"".join(pieces) + b".\r\n" + AFTER


@pytest.mark.parametrize("seed", range(6))
def test_chunked_reader_matches_aiosmtpd_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    outcomes = set()
    for case in range(250):
        line_limit = rng.choice([64, 100, 1001])
        size_limit = rng.choice([200, 1000, 3000, 10**6])
        stream = _stream(rng, line_limit)
        expected = asyncio.run(
            _run(_aiosmtpd_loop, stream, size_limit, line_limit, random.Random(case))
        )
        got = asyncio.run(_run(_ours, stream, size_limit, line_limit, random.Random(case + 1)))
        assert got == expected, (seed, case, line_limit, size_limit, stream[:300])
        outcomes.add(got[0][0])
    assert outcomes == set(DataOutcome)  # every branch was exercised


def test_dot_stuffing_is_undone_and_the_end_marker_needs_a_line_start() -> None:
    stream = b"..a\r\nb.\r\n...\r\n\r\n.\r\n" + AFTER
    (outcome, content), rest = asyncio.run(
        _run(
            _ours,
            stream,
            10_000,
            1001,
            random.Random(1),
        )
    )
    assert outcome == DataOutcome.OK
    assert content == b".a\r\nb.\r\n..\r\n\r\n"
    assert rest == AFTER


def test_an_empty_message_ends_at_the_first_line() -> None:
    (outcome, content), rest = asyncio.run(
        _run(
            _ours,
            b".\r\n" + AFTER,
            10_000,
            1001,
            random.Random(2),
        )
    )
    assert (outcome, content, rest) == (DataOutcome.OK, b"", AFTER)


def test_a_large_message_arrives_whole() -> None:
    body = b"".join(b"%076d\r\n" % i for i in range(40_000))  # ~3 MB, no end marker inside
    stream = b"." + body + b".\r\n" + AFTER
    (outcome, content), rest = asyncio.run(
        _run(
            _ours,
            stream,
            10**7,
            1001,
            random.Random(3),
        )
    )
    assert outcome == DataOutcome.OK and content == body and rest == AFTER


@pytest.mark.parametrize("line_limit", [1001, 1200])
def test_the_line_that_crosses_the_size_limit_decides_between_552_and_500(line_limit: int) -> None:
    seen = set()
    for n in range(300, 2600, 23):
        for first in (b"", b"a" * 500 + b"\r\n", b"a" * 1100 + b"\r\n"):
            stream = first + b"b" * n + b"\r\nc\r\n.\r\n" + AFTER
            expected = asyncio.run(_run(_aiosmtpd_loop, stream, 1000, line_limit, random.Random(n)))
            got = asyncio.run(_run(_ours, stream, 1000, line_limit, random.Random(n + 1)))
            assert got == expected, (n, len(first), line_limit)
            seen.add(got[0][0])
    assert seen == set(DataOutcome)
