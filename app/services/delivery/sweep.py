"""The periodic sweep: wake domains whose delivery job is gone, release due scheduled sends.

MongoDB is the queue; a Redis job only says "mail for this domain is due now". When that job
is lost (Redis flushed, worker killed mid-lease) the sweep puts it back, one per domain.

Two searches find lost jobs. The full search (every status range of the recipients, and the
queue-depth counts) finds them all; it rests after a long read. While it rests, the domains
nobody holds (``domain_leases`` whose lease has ended or was given back: leases.py keeps the
document) are looked at on every periodic sweep, one short read of each such domain's overdue
mail; a domain somebody holds is being worked, so its backlog is not read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters import metrics
from app.adapters.delivery_jobs import missing_jobs
from app.adapters.mongo import UpdateOne
from app.adapters.queue import JobQueue, QueuedJob
from app.services.delivery.outbox import is_due, job_id, unleased_status
from app.services.sending.scheduling import SchedulingService

SWEEP_LIMIT = 2000
QUEUE_STATUSES = ("queued", "deferred", "sending", "scheduled")  # waiting to be delivered
SWEEP_GRACE = 60.0  # seconds a recipient is overdue before a periodic sweep wakes its domain
# The periodic sweep's full search for lost jobs (and the queue-depth counts) spends at most
# this share of the time: after a search that took T seconds, the next periodic one waits until
# T / SWEEP_SHARE has passed. On SecantusDB these reads decode every waiting recipient (it has
# no limit pushdown): 2.7 s + 2.4 s with 50,000 queued. At 0.1 of the time they still cost a
# 100,000-recipient campaign drain 17-21 % of its rate (docs/benchmarks.md "Eighteenth
# session"); the domains that were leased, where a killed worker or a flushed Redis leaves
# mail, are looked at while it rests instead (``_idle_domains_due``). On MongoDB the full
# search takes milliseconds and still runs every 15 s.
SWEEP_SHARE = 0.02
# A given-back lease's document is the sweep's record that the domain had mail; one idle this
# long is removed by a full search (which finds any mail of a domain without one).
LEASE_RECORD_KEPT = timedelta(days=7)
# The domains nobody holds looked at by one sweep: the most recently ended leases (a killed
# worker's, a lane idle since its last retry), one short read each. The full search covers the
# rest; on MongoDB it runs every 15 s, so this check only matters while it rests.
IDLE_DOMAINS_MAX = 200
FIELDS = {
    "message_id": 1,
    "domain": 1,
    "job_id": 1,
    "attempts": 1,
    "lease_until": 1,
    "local_user_id": 1,
    "delivery_status": 1,
    "next_attempt_at": 1,
}


class Sweeper:
    def __init__(
        self,
        *,
        db: Any,
        queue: JobQueue,
        scheduling: SchedulingService,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.queue = queue
        self.scheduling = scheduling
        self._swept = False  # the first sweep of a process looks at everything due
        self._clock = clock
        self._rest_until = 0.0  # (clock) a paced sweep before this skips the full search
        self._count_rest_until = 0.0  # (clock) ... and the queue-depth counts

    async def sweep(
        self,
        now: datetime | None = None,
        limit: int = SWEEP_LIMIT,
        grace: float | None = None,
        *,
        paced: bool = False,
    ) -> dict[str, int]:
        """Wake every domain with due recipients whose job is gone (Redis flushed, worker
        killed), and release scheduled sends whose time has come.

        A lost lease (``sending`` past ``lease_until``: a per-recipient lease of an older
        release; this one leases domains, leases.py) is given back first, to ``queued`` or
        ``deferred`` where the lanes' pulls find it, and gets a job keyed by that lease; other
        recipients the id their last deferral used, so a job still waiting in Redis is not
        duplicated. One job per domain: it wakes the lane, which pulls all that is due.

        The first sweep of a process looks at everything due; later ones only at recipients
        due for more than ``grace`` seconds (SWEEP_GRACE): a healthy worker takes a recipient
        long before that, so a backlog being worked through is not read again every 15 s. Each
        status is one range of the (delivery_status, next_attempt_at) index. The periodic
        job's first sweep (a worker's start-up) looks at the domains nobody holds and counts
        the queue; the counts read the backlog as the full search would, so the first full
        search waits as a search of their duration would have it rest (on MongoDB: the next
        sweep; with 100,000 queued on SecantusDB, minutes, while the lanes start). A killed
        predecessor's domains stay leased to it for the lease length anyway, and their mail
        is found once its leases end. The queue-depth counts are also taken while the full
        search rests, whenever their own last duration allows (the same share of the time).

        ``paced`` (the periodic job): scheduled sends are released every time, and the domains
        nobody holds are looked at whenever the full search does not run
        (``_idle_domains_due``); the full search rests
        after a long one (``SWEEP_SHARE``): with a large backlog, mail of a domain never
        leased whose job was lost is found later (fifty times as long as the backlog takes to
        read), never not at all. ``resting`` says the full search rested.
        """
        now = now or datetime.now(UTC)
        scheduled = (
            await self.db.recipients.find(
                {"delivery_status": "scheduled", "next_attempt_at": {"$lte": now}},
                {"message_id": 1},
            )
            .limit(limit)
            .to_list()
        )
        released = len(
            await self.scheduling.release_due(list({d["message_id"] for d in scheduled}))
        )
        started = self._clock()
        if grace is None:
            grace = SWEEP_GRACE if self._swept else 0.0
        overdue = now - timedelta(seconds=grace)
        start_up = paced and not self._swept  # the domains nobody holds, no grace, the counts
        if start_up or (paced and started < self._rest_until):
            self._swept = True
            docs = await self._idle_domains_due(now, overdue)
            enqueued = await self._wake(docs)
            if started >= self._count_rest_until:  # the gauge, paced by its own cost
                await self._count_queue()
                self._count_rest_until = self._rest_after(started)
            if start_up:  # the counts read the backlog as a search would: paced by them
                self._rest_until = self._count_rest_until
            return {"due": len(docs), "enqueued": enqueued, "released": released, "resting": 1}
        self._swept = True
        # Lost leases first (few, and the reason the sweep exists), then the waiting ones.
        docs = []
        for query in (
            {"delivery_status": "sending"},
            {"delivery_status": "queued", "next_attempt_at": {"$lte": overdue}},
            {"delivery_status": "deferred", "next_attempt_at": {"$lte": overdue}},
        ):
            found = await self.db.recipients.find(query, FIELDS).limit(limit).to_list()
            docs += [d for d in found if is_due(d, now)]
        await self._give_back_lapsed([d for d in docs if d["delivery_status"] == "sending"], now)
        enqueued = await self._wake(docs)
        await self._count_queue()
        await self.db.domain_leases.delete_many({"until": {"$lt": now - LEASE_RECORD_KEPT}})
        self._rest_until = self._count_rest_until = self._rest_after(started)
        return {"due": len(docs), "enqueued": enqueued, "released": released, "resting": 0}

    def _rest_after(self, started: float) -> float:
        """When a read begun at ``started`` (the clock) and ending now may be done again: it
        takes at most SWEEP_SHARE of the time."""
        return started + (self._clock() - started) / SWEEP_SHARE

    async def _idle_domains_due(self, now: datetime, overdue: datetime) -> list[dict[str, Any]]:
        """One overdue recipient of each domain whose lease has ended or was given back (a
        killed worker's, or a lane's that went idle before a retry fell due; the
        IDLE_DOMAINS_MAX most recent): each a short range of the (domain, delivery_status,
        next_attempt_at) index. A held domain is left alone: its holder's lanes pull all that
        is due there."""
        idle = (
            await self.db.domain_leases.find({"until": {"$lte": now}}, {"_id": 1})
            .sort("until", -1)
            .limit(IDLE_DOMAINS_MAX)
            .to_list()
        )
        docs = []
        for lease in idle:
            for status in ("queued", "deferred"):
                query = {
                    "domain": lease["_id"],
                    "delivery_status": status,
                    "next_attempt_at": {"$lte": overdue},
                }
                found = await self.db.recipients.find(query, FIELDS).limit(1).to_list()
                if found and is_due(found[0], now):
                    docs.append(found[0])
                    break
        return docs

    async def _wake(self, docs: list[dict[str, Any]]) -> int:
        """Enqueue a job for each domain of ``docs`` that has none waiting in Redis."""
        # One job per domain is enough: it wakes the domain's lane, which pulls everything due.
        wanted: dict[str, tuple[ObjectId, str]] = {}
        seen: set[str] = set()
        for d in docs:
            if d["domain"] in seen:
                continue
            seen.add(d["domain"])
            if d["delivery_status"] == "sending" and d.get("lease_until"):
                jid = job_id(d["message_id"], d["domain"], d["lease_until"])
            else:
                jid = d.get("job_id") or job_id(d["message_id"], d["domain"])
            wanted[jid] = (d["message_id"], d["domain"])
        return await self.queue.enqueue_many(
            [
                QueuedJob("deliver_domain", (str(wanted[jid][0]), wanted[jid][1]), jid)
                for jid in await missing_jobs(self.queue, list(wanted))
            ]
        )

    async def _count_queue(self) -> None:
        """The send queue's depth by status, for the metrics (each count is one range of the
        (delivery_status, next_attempt_at) index)."""
        metrics.queue_depth(
            {
                status: await self.db.recipients.count_documents({"delivery_status": status})
                for status in QUEUE_STATUSES
            }
        )

    async def _give_back_lapsed(self, docs: list[dict[str, Any]], now: datetime) -> None:
        """Recipients an older release left ``sending`` under a lease of their own that has
        lapsed: back to the status a release without an attempt gives (the pull rounds ask
        only for ``queued`` and ``deferred``), each only if its lease is still the one read."""
        if docs:
            await self.db.recipients.bulk_write(
                [
                    UpdateOne(
                        {
                            "_id": d["_id"],
                            "delivery_status": "sending",
                            "lease_until": d["lease_until"],
                        },
                        {
                            "$set": {
                                "delivery_status": unleased_status(d),
                                "lease_until": None,
                                "lease_token": None,
                                "updated_at": now,
                            }
                        },
                    )
                    for d in docs
                ],
                ordered=False,
            )
