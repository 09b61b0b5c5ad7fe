"""``in_waves``: every call runs, never more than ``at_once`` of them at a time."""

from __future__ import annotations

import asyncio
from functools import partial

from app.adapters.queue import in_waves


async def test_every_call_runs_at_most_at_once_at_a_time() -> None:
    running, most, done = 0, 0, []

    async def call(n: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        done.append(n)

    await in_waves((partial(call, n) for n in range(23)), 5)
    assert sorted(done) == list(range(23))
    assert most == 5
    await in_waves([], 5)  # nothing to run: nothing happens
