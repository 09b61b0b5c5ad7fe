"""The delivery sweep against real MongoDB and Redis: lost jobs are found; a backlog that is
being worked through is not re-read by every periodic sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId
from prometheus_client import REGISTRY

from app.adapters import metrics
from app.services.delivery import sweep as sweep_module
from app.services.delivery.sweep import SWEEP_GRACE, SWEEP_SHARE, Sweeper
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
        rest = 5.0 / SWEEP_SHARE  # a search that took 5 s of the clock rests this long
        # the clock, read twice per full search or counting sweep, once per resting sweep
        ticks = iter([0.0, 5.0, 10.0, rest - 1, rest + 1, rest + 1.5])
        sweeper = Sweeper(
            db=w.system.mongo.db,
            queue=w.system.delivery.sweeper.queue,
            scheduling=w.system.scheduling,
            clock=lambda: next(ticks),
        )
        now = datetime.now(UTC)
        # A worker's first sweep: the domains nobody holds (none was ever leased here) and
        # the counts, which took 5 s of the clock: the full search rests as after a 5 s one.
        first = await sweeper.sweep(now=now, paced=True)
        assert (first["resting"], first["enqueued"]) == (1, 0)

        await w.system.redis.client.flushall()
        later = now + timedelta(seconds=SWEEP_GRACE + 1)  # overdue: a search would find them
        for _ in range(2):  # at 10 s and just before the rest ends: no full search
            resting = await sweeper.sweep(now=later, paced=True)  # (no domain was ever leased)
            assert (resting["resting"], resting["due"], resting["enqueued"]) == (1, 0, 0)
        assert "released" in resting  # scheduled sends are released all the same
        found = await sweeper.sweep(now=later, paced=True)  # after the rest: searches again
        assert (found["resting"], found["due"], found["enqueued"]) == (0, 2, 2)
        # an explicit sweep (not the periodic job's) never rests
        assert (await w.system.delivery.sweep(now=later))["resting"] == 0


async def test_a_resting_sweep_wakes_the_domains_nobody_holds_and_leaves_held_ones_alone(
    settings, monkeypatch
):
    """While the full search rests, the domains whose lease ended or was given back (a killed
    worker's, an idle lane's) are looked at on every sweep; a held domain's backlog is not
    read (its holder's lanes are on it), and a domain never leased waits for the full search."""
    async with outbound_world(settings, worker=False) as w:
        await w.send(["a@ok.test", "b@mixed.test", "c@implicit.test"], subject="one")
        db = w.system.mongo.db
        now = datetime.now(UTC)
        ticks = iter([0.0, 5.0, 10.0, 20.0, 25.0, 30.0])
        sweeper = Sweeper(
            db=db,
            queue=w.system.delivery.sweeper.queue,
            scheduling=w.system.scheduling,
            clock=lambda: next(ticks),
        )
        assert (await sweeper.sweep(now=now, paced=True))["resting"] == 1  # counted in 5 s

        await w.system.redis.client.flushall()  # every job is gone
        later = now + timedelta(seconds=SWEEP_GRACE + 1)
        await db.domain_leases.insert_many(
            [  # ok.test given back (the document stays, ended); implicit.test held elsewhere
                {"_id": "ok.test", "token": ObjectId(), "until": now},
                {"_id": "implicit.test", "token": ObjectId(), "until": later + timedelta(1)},
            ]
        )
        swept = await sweeper.sweep(now=later, paced=True)
        assert (swept["resting"], swept["due"], swept["enqueued"]) == (1, 1, 1)
        assert (await sweeper.sweep(now=later, paced=True))["enqueued"] == 0  # its job waits

        # Only the most recently ended leases are looked at; the full search covers the rest.
        await db.domain_leases.insert_one(
            {"_id": "quiet.test", "token": ObjectId(), "until": now + timedelta(seconds=1)}
        )
        with monkeypatch.context() as patch:
            patch.setattr(sweep_module, "IDLE_DOMAINS_MAX", 1)
            assert (await sweeper.sweep(now=later, paced=True))["due"] == 0  # quiet.test only
        await db.domain_leases.delete_one({"_id": "quiet.test"})
        # The holder died: its lease runs out, and the next sweep wakes that domain too.
        await db.domain_leases.update_one({"_id": "implicit.test"}, {"$set": {"until": now}})
        swept = await sweeper.sweep(now=later, paced=True)
        assert (swept["resting"], swept["due"], swept["enqueued"]) == (1, 2, 1)
        # mixed.test was never leased: the full search (an explicit sweep here) finds it.
        found = await w.system.delivery.sweep(now=later)
        assert (found["resting"], found["due"], found["enqueued"]) == (0, 3, 1)


async def test_a_workers_first_sweep_wakes_ended_leases_at_once_and_searches_when_counted(
    settings,
):
    """A worker's start-up sweep (the periodic job's first): the domains whose lease ended are
    woken with no grace (mail due now) and the queue is counted; the full search, which finds
    a domain never leased, rests as long as after a search as long as the counts took (they
    read the same backlog), so the lanes start without the backlog being searched."""
    async with outbound_world(settings, worker=False) as w:
        await w.send(["a@ok.test", "b@mixed.test"], subject="one")
        await w.system.redis.client.flushall()  # every job is gone
        db = w.system.mongo.db
        now = datetime.now(UTC)
        await db.domain_leases.insert_one({"_id": "ok.test", "token": ObjectId(), "until": now})
        ticks = iter([0.0, 2.0, 50.0, 101.0, 102.0])  # the counts take 2 s: rest 100 s
        sweeper = Sweeper(
            db=db,
            queue=w.system.delivery.sweeper.queue,
            scheduling=w.system.scheduling,
            clock=lambda: next(ticks),
        )
        metrics.QUEUE_DEPTH.labels("queued").set(-1)
        first = await sweeper.sweep(now=now, paced=True)  # due now, not overdue: found
        assert (first["resting"], first["due"], first["enqueued"]) == (1, 1, 1)
        queued = REGISTRY.get_sample_value("mailhub_send_queue_recipients", {"status": "queued"})
        assert queued is not None and queued >= 2  # and the queue is counted at once
        later = now + timedelta(seconds=SWEEP_GRACE + 1)
        resting = await sweeper.sweep(now=later, paced=True)  # at 50 s: ok.test's job waits
        assert (resting["resting"], resting["enqueued"]) == (1, 0)
        found = await sweeper.sweep(now=later, paced=True)  # at 101 s: the full search
        assert (found["resting"], found["due"], found["enqueued"]) == (0, 2, 1)  # mixed.test


async def test_a_lapsed_per_recipient_lease_of_an_older_release_is_given_back_and_delivered(
    settings,
):
    """Older releases leased recipients one by one (``sending`` until ``lease_until``). The
    pull rounds ask only for ``queued`` and ``deferred``; the sweep gives such a recipient back
    once its lease has lapsed (never while it holds), wakes its domain, and it is delivered."""
    async with outbound_world(settings, worker=False) as w:
        view = await w.send(["a@ok.test", "b@ok.test"], subject="legacy")
        await w.system.redis.client.flushall()
        now = datetime.now(UTC)
        db = w.system.mongo.db
        message_id = view["message_id"]
        for address, until in (
            ("a@ok.test", now - timedelta(seconds=5)),
            ("b@ok.test", now + timedelta(hours=1)),
        ):
            await db.recipients.update_one(
                {"message_id": message_id, "address": address},
                {
                    "$set": {
                        "delivery_status": "sending",
                        "lease_until": until,
                        "lease_token": "old",
                    }
                },
            )

        swept = await w.system.delivery.sweep(now=now)
        assert (swept["due"], swept["enqueued"]) == (1, 1)
        rows = await w.recipients(message_id)
        assert rows["a@ok.test"]["delivery_status"] == "queued"
        assert rows["a@ok.test"]["lease_until"] is None
        assert rows["b@ok.test"]["delivery_status"] == "sending"  # its lease still holds

        await w.start_worker()
        await w.wait_statuses(message_id, {"a@ok.test": "sent"})
        assert w.accepted_by_sinks()["a@ok.test"] == 1
        assert (await w.recipients(message_id))["b@ok.test"]["delivery_status"] == "sending"
