"""Domain leases when a renewal runs late (a busy event loop), on a real SecantusDB.

The renewer is stopped and run by hand, so "late" is exact: the loop is blocked with a plain
``time.sleep`` for as long as the renewal should be late, and nothing else can run meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.background import stop_task
from app.services.delivery import leases as leases_module
from app.services.delivery.leases import DomainLeases

LEASE = timedelta(seconds=1.2)
MARGIN = timedelta(seconds=0.6)  # what the lanes need left to start a transaction


def holder(mongo: Any, woken: list[str], idle: bool = True) -> DomainLeases:
    return DomainLeases(
        mongo.db,
        LEASE,
        is_idle=lambda domain: idle,
        wake=woken.append,
        min_left=MARGIN,
    )


async def without_renewer(leases: DomainLeases) -> None:
    """Stop the background renewer: the test decides when (and how late) it renews."""
    await stop_task(leases._renewer)


async def test_a_lease_left_too_short_by_a_late_renewal_is_renewed_by_the_next_round(mongo):
    a = holder(mongo, [])
    try:
        assert await a.hold(["ok.test"], datetime.now(UTC)) == {"ok.test"}
        await without_renewer(a)
        lease = a.held["ok.test"]
        # The loop is blocked until 0.3 s are left: the renewals due meanwhile have not run.
        time.sleep(max(0.0, (lease.until - datetime.now(UTC)).total_seconds() - 0.3))
        now = datetime.now(UTC)
        assert timedelta(0) < lease.until - now < MARGIN  # still ours, too short for a lane
        assert await a.hold(["ok.test"], now) == {"ok.test"}
        # The round hands the lanes a lease they can use, and the database agrees.
        assert a.held["ok.test"].until - now >= LEASE - timedelta(seconds=0.05)
        doc = await mongo.db.domain_leases.find_one({"_id": "ok.test"})
        assert doc["token"] == a.token and doc["until"] >= now + MARGIN
    finally:
        await a.close(give_back=True)


async def test_a_renewal_later_than_the_lease_gives_the_domain_up_and_asks_again(
    mongo, monkeypatch
):
    monkeypatch.setattr(leases_module, "HELD_RETRY", 0.2)
    woken_a: list[str] = []
    a, b = holder(mongo, woken_a), holder(mongo, [])
    try:
        assert await a.hold(["ok.test"], datetime.now(UTC)) == {"ok.test"}
        await without_renewer(a)
        lease = a.held["ok.test"]
        time.sleep(LEASE.total_seconds() + 0.2)  # blocked past the end of a's lease
        # Another worker takes the expired lease before a's late renewal runs.
        assert await b.hold(["ok.test"], datetime.now(UTC)) == {"ok.test"}
        await a._renew()
        # a gave it up: its lanes start nothing more (the lease they hold has ended) ...
        assert "ok.test" not in a.held and lease.until <= datetime.now(UTC)
        doc = await mongo.db.domain_leases.find_one({"_id": "ok.test"})
        assert doc["token"] == b.token  # ... and b's lease was not renewed in a's name
        # a asks again later by itself (what its lanes gave back must not wait for a job).
        for _ in range(100):
            if "ok.test" in woken_a:
                break
            await asyncio.sleep(0.05)
        assert woken_a == ["ok.test"]
        assert await a.hold(["ok.test"], datetime.now(UTC)) == set()  # b still holds it
        await b.release(["ok.test"])  # b is done: a takes the domain over at once
        assert await a.hold(["ok.test"], datetime.now(UTC)) == {"ok.test"}
    finally:
        await a.close(give_back=True)
        await b.close(give_back=True)
