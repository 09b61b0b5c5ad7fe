"""``campaignProgress``'s stats (issue 15): one count of a campaign's records at a time for every
subscriber of the process, and a list that takes long to count is counted at most a tenth of the
time (on SecantusDB a count of 100,000 recipients takes ~10 s of database CPU; counted back to
back, one subscriber held the database busy and slowed the campaign's own delivery).

Real MongoDB-protocol server (the suite's SecantusDB); the clock is injected, and each count
"takes" two of its seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from app.bootstrap import System, build_system
from app.domain.campaigns import RecipientRow
from app.services.campaigns import lists
from app.services.campaigns import stats as stats_module
from app.services.campaigns.stats import STATS_SHARE, LiveStats, campaign_stats, stats_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _rows(*names: str) -> list[RecipientRow]:
    return [RecipientRow(f"{n}@live.test", f"{n}@live.test", {}) for n in names]


@pytest.fixture
async def system(settings: Any) -> AsyncIterator[System]:
    system = await build_system(settings)
    try:
        yield system
    finally:
        await system.close()


async def test_one_count_for_concurrent_subscribers_then_paced_by_its_duration(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = system.mongo.db
    cid = ObjectId()
    now = datetime.now(UTC)
    await db.campaign_lists.insert_many(lists.parts_of(cid, 0, _rows("r0", "r1", "r2"), now))
    # the first batch queued r0: the campaign's pending_floor is past it (lists.state_of)
    campaign = {
        "_id": cid,
        "status": "sending",
        "pending_floor": 1,
        "next_seq": 3,
        "recipients": 3,
        "track_opens": False,
        "track_clicks": False,
    }
    await db.campaigns.insert_one(campaign)
    clock = Clock()
    counts: list[float] = []
    real_count = stats_module.count

    async def timed_count(mongo: Any, doc: dict[str, Any]) -> dict[str, Any]:
        counts.append(clock.now)
        result = await real_count(mongo, doc)
        clock.now += 2.0  # this count took 2 s
        return result

    async def counted_now(doc: dict[str, Any]) -> dict[str, Any]:
        return stats_of(doc, await real_count(system.mongo, doc))

    monkeypatch.setattr(stats_module, "count", timed_count)
    live = LiveStats(system.mongo, clock=clock)

    first, second = await asyncio.gather(live.stats(campaign), live.stats(campaign))
    assert counts == [100.0]  # the second subscriber waited for the count in flight
    assert first == second == await counted_now(campaign)
    assert (first["queued"], first["pending"]) == (1, 2)

    # The batch sender queues another; the campaign document says the list grew.
    await db.campaigns.update_one({"_id": cid}, {"$set": {"pending_floor": 2}})
    grown = {**campaign, "recipients": 4, "waiting": "warmup"}
    pace = 2.0 / STATS_SHARE  # the next count no sooner than this after the last began
    clock.now = 100.0 + pace - 0.5
    reused = await live.stats(grown)
    assert len(counts) == 1
    assert (reused["queued"], reused["pending"]) == (1, 2)  # the last count
    assert reused["recipients"] == 4 and reused["waiting"] == "warmup"  # the fresh document
    assert reused["waitingForWarmup"] == 2

    clock.now = 100.0 + pace
    fresh = await live.stats(grown)
    assert counts == [100.0, 100.0 + pace]
    assert (fresh["queued"], fresh["pending"]) == (2, 1)
    assert fresh == await counted_now(grown)


async def test_a_quick_count_is_made_every_time_and_tracking_is_counted_apart(
    system: System,
) -> None:
    """A small campaign counts in milliseconds, so every call (the subscription's one a second)
    counts afresh; a campaign with tracking is counted with its opens and clicks, not from the
    untracked count."""
    db = system.mongo.db
    cid = ObjectId()
    campaign = {"_id": cid, "recipients": 1, "track_opens": False}
    await db.campaigns.insert_one({**campaign, "status": "sending", "pending_floor": 0})
    live = LiveStats(system.mongo, clock=Clock())  # counts take none of its time
    assert (await live.stats(campaign))["pending"] == 0
    parts = lists.parts_of(cid, 0, _rows("a"), datetime.now(UTC))
    await db.campaign_lists.insert_many(parts)
    assert (await live.stats(campaign))["pending"] == 1
    tracked = await live.stats({**campaign, "track_opens": True})
    assert tracked == await campaign_stats(system.mongo, {**campaign, "track_opens": True})
