"""A lane's pulls (app/services/delivery/lanes.py): news of due mail is not lost to a round
that read before the mail was committed.

Pure service logic: the pull is a stand-in coroutine, nothing else of the lane runs.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from app.services.delivery.lanes import Lanes


def lanes_with(pull: Any) -> Lanes:
    none: Any = None  # a refill touches only the pull
    return Lanes(
        transport=none,
        resolver=none,
        throttle=none,
        recorder=none,
        secret=b"",
        relay_host=None,
        lease_margin=timedelta(0),
        pull=pull,
    )


async def test_mail_noted_while_a_pull_reads_is_pulled_again() -> None:
    reading, answer = asyncio.Event(), asyncio.Event()
    calls = 0

    async def pull(domain: str, limit: int) -> bool:
        nonlocal calls
        calls += 1
        reading.set()
        await answer.wait()
        return False  # the round read before the new mail was committed: "nothing more"

    lanes = lanes_with(pull)
    lane = lanes.lane("d.test")
    lane.senders = 1  # the refill runs in the lane's sender; no second sender is started
    refill = asyncio.create_task(lanes._refill(lane))
    await reading.wait()
    lanes.note_waiting("d.test")  # the delivery job of a send committed meanwhile
    answer.set()
    await refill
    assert lane.wants_pull  # the sender pulls again, instead of leaving it to the sweep

    reading.clear()
    await lanes._refill(lane)  # the next round: nothing noted this time
    assert calls == 2
    assert not lane.wants_pull


async def test_a_round_that_saw_more_asks_again() -> None:
    async def pull(domain: str, limit: int) -> bool:
        return True

    lanes = lanes_with(pull)
    lane = lanes.lane("d.test")
    await lanes._refill(lane)
    assert lane.wants_pull and not lane.pulling
