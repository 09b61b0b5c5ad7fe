"""The delivery sweep against real MongoDB and Redis: lost jobs are found; a backlog that is
being worked through is not re-read by every periodic sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.services.delivery.sweep import SWEEP_GRACE, Sweeper
from tests.support.outbound import outbound_world


async def test_first_sweep_wakes_every_domain_and_later_ones_wait_for_overdue_mail(settings):
    async with outbound_world(settings, worker=False) as w:
        await w.send(["a@ok.test", "b@mixed.test"], subject="one")
        await w.send(["c@ok.test"], subject="two")
        await w.system.redis.client.flushall()  # every job is gone
        delivery = w.system.delivery
        now = datetime.now(UTC)

        first = await delivery.sweep(now=now)  # a process's first sweep: everything due
        assert first["due"] == 3 and first["enqueued"] == 2  # one job per domain

        await w.system.redis.client.flushall()
        later = await delivery.sweep(now=now)  # due, but not overdue: a lane may be on it
        assert later["due"] == 0 and later["enqueued"] == 0

        overdue = await delivery.sweep(now=now + timedelta(seconds=SWEEP_GRACE + 1))
        assert overdue["due"] == 3 and overdue["enqueued"] == 2

        again = await delivery.sweep(now=now + timedelta(seconds=SWEEP_GRACE + 2))
        assert again["enqueued"] == 0  # the jobs are there now: nothing duplicated


async def test_a_paced_sweep_rests_after_a_long_search_and_then_finds_the_lost_jobs(settings):
    async with outbound_world(settings, worker=False) as w:
        await w.send(["a@ok.test", "b@mixed.test"], subject="one")
        await w.system.redis.client.flushall()  # every job is gone
        ticks = iter([0.0, 5.0, 10.0, 49.0, 51.0, 51.5])  # the clock, read twice per search
        sweeper = Sweeper(
            db=w.system.mongo.db,
            queue=w.system.delivery.sweeper.queue,
            scheduling=w.system.scheduling,
            clock=lambda: next(ticks),
        )
        now = datetime.now(UTC)
        first = await sweeper.sweep(now=now, paced=True)  # took 5 s of the clock: rest 50 s
        assert (first["resting"], first["enqueued"]) == (0, 2)

        await w.system.redis.client.flushall()
        later = now + timedelta(seconds=SWEEP_GRACE + 1)  # overdue: a search would find them
        for _ in range(2):  # at 10 s and 49 s: resting, nothing read
            resting = await sweeper.sweep(now=later, paced=True)
            assert (resting["resting"], resting["due"], resting["enqueued"]) == (1, 0, 0)
        assert "released" in resting  # scheduled sends are released all the same
        found = await sweeper.sweep(now=later, paced=True)  # at 51 s: searches again
        assert (found["resting"], found["due"], found["enqueued"]) == (0, 2, 2)
        # an explicit sweep (not the periodic job's) never rests
        assert (await w.system.delivery.sweep(now=later))["resting"] == 0
