"""The delivery sweep against real MongoDB and Redis: lost jobs are found; a backlog that is
being worked through is not re-read by every periodic sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.services.delivery.sweep import SWEEP_GRACE
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
